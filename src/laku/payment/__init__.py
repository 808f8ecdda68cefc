"""payment-service (port 3006): escrow payments backed by Xendit invoices, refunds."""
