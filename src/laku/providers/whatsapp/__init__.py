"""WhatsApp Business Cloud API: client and sandbox."""
