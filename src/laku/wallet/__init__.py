"""wallet-service (port 3010): buyers' wallets, their transactions, withdrawals."""
