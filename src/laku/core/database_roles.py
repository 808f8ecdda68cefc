"""Least privilege in PostgreSQL: each service connects as its own role (`laku_<service>`), which
may read and write its own schema's tables and nothing else; migrations run as the role that
owns the schemas and grant it (`laku.core.migrations`). Here: the roles' names, passwords and
URLs."""

import hashlib
import hmac
import os
from collections.abc import Iterable, Mapping
from urllib.parse import quote, urlsplit, urlunsplit

from laku.core.services import SERVICES

# The secret every role's password derives from. Read from the environment by the commands that
# set or print passwords (`laku migrate`, `laku database-url`, `laku up`) and never a setting:
# no service process is given it.
ROLE_SECRET_VARIABLE = "LAKU_DATABASE_ROLE_SECRET"


def role_secret_from_environment() -> str | None:
    return os.environ.get(ROLE_SECRET_VARIABLE) or None


def service_role(service: str) -> str:
    """The PostgreSQL role a service connects as, e.g. `laku_group_buying`."""
    return "laku_" + service.replace("-", "_")


def role_password(secret: str, role: str) -> str:
    """A role's password, derived from one secret: whoever holds it (the migration, `laku up`)
    knows every role's password, and no password needs storing."""
    return hmac.new(secret.encode(), role.encode(), hashlib.sha256).hexdigest()


def role_url(url: str, role: str, password: str | None) -> str:
    """`url` (to any database) logging in as `role` instead. Plain string work: `laku up`'s
    supervisor, which calls it, never loads SQLAlchemy."""
    parts = urlsplit(url)
    server = parts.netloc.rpartition("@")[2]
    login = quote(role, safe="") + (f":{quote(password, safe='')}" if password else "")
    return urlunsplit(parts._replace(netloc=f"{login}@{server}"))


def service_database_urls(
    database_url: str,
    services: Iterable[str],
    database_urls: Mapping[str, str] | None = None,
    secret: str | None = None,
) -> dict[str, str]:
    """Each service's URL as its own role, on its own database (`database_urls`) or the shared
    one; with the passwords derived from `secret`, else none (a server that trusts local
    connections)."""
    own = database_urls or {}
    urls = {}
    for service in services:
        if service not in SERVICES:
            continue  # the web front end and the sandboxes have no database
        role = service_role(service)
        password = role_password(secret, role) if secret else None
        urls[service] = role_url(own.get(service, database_url), role, password)
    return urls
