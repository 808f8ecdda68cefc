"""address-service (port 3015): buyers' addresses."""
