"""factory-service (port 3003): factories, verification, reviews, factory accounts."""
