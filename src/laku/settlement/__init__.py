"""settlement-service (port 3013): factory settlements and the double-entry ledger."""
