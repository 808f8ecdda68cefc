"""Biteship (courier rates, orders, tracking, status webhooks): client and sandbox."""
