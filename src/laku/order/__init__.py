"""order-service (port 3005): orders and order items created when a group succeeds."""
