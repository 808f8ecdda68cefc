"""warehouse-service (port 3008): stock, reservations, movement ledger, purchase orders."""
