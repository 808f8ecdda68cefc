"""auth-service (port 3001): users, credentials, roles, token signing keys."""
