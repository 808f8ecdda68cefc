"""Xendit (invoices, webhooks): client and sandbox."""
