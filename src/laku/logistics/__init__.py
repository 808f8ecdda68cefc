"""logistics-service (port 3011): shipping rates, shipments booked with Biteship, tracking."""
