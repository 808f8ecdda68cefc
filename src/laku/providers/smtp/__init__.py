"""E-mail over SMTP: client and a local sink."""
