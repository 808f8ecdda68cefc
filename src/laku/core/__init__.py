"""Shared kernel: what every service uses the same way."""
