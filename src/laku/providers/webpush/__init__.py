"""Web Push (RFC 8030) with VAPID (RFC 8292) and message encryption (RFC 8291): client and a
local push service."""
