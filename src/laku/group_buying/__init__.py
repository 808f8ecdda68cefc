"""group-buying-service (port 3004): sessions, participants, grosir bundle composition."""
