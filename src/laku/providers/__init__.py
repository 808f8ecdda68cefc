"""Clients for external providers, each with a local sandbox speaking the same contract."""
