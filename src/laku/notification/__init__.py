"""notification-service (port 3007): WhatsApp, e-mail and in-app notifications via an outbox."""
