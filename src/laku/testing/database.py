"""A throwaway PostgreSQL database: on the configured server, the local one, or an embedded one."""

import asyncio
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

from laku.core.database_roles import service_database_urls
from laku.core.embedded_db import embedded_postgres
from laku.core.migrations import migrate
from laku.core.services import PROCESSES

LOCAL_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"


def plain_url(url: str) -> str:
    """asyncpg wants a driver-less URL."""
    parsed = make_url(url)
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


def run(coro):
    return asyncio.run(coro)


async def _reachable(url: str) -> bool:
    try:
        conn = await asyncpg.connect(plain_url(url), timeout=2)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    await conn.close()
    return True


@contextmanager
def database_server(tmp_root: Path) -> Iterator[str]:
    """The configured server, else the local one, else an embedded one."""
    configured = os.environ.get("LAKU_DATABASE_URL")
    if configured:
        yield configured
    elif run(_reachable(LOCAL_SERVER)):
        yield LOCAL_SERVER
    else:
        with embedded_postgres(tmp_root) as url:
            yield url


@contextmanager
def throwaway_database(server_url: str, services: list[str] | None = None) -> Iterator[str]:
    """A new database on `server_url` (any database's URL names its server), migrated for
    every service or only `services`, dropped afterwards."""
    name = f"laku_test_{uuid.uuid4().hex[:12]}"
    url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
    migrate(url, services)
    try:
        yield url
    finally:

        async def drop() -> None:
            admin = await asyncpg.connect(plain_url(make_url(url).set(database="postgres")))
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            finally:
                await admin.close()

        run(drop())


def service_role_env(
    database_url: str, database_urls: dict[str, str] | None = None
) -> dict[str, dict[str, str]]:
    """What each service process gets on top of the platform's environment: its database as its
    own role (no password: the test server trusts local connections), so the suite runs with
    the privileges production has. Tests that look at the database directly keep the
    superuser's URL."""
    urls = service_database_urls(database_url, PROCESSES, database_urls)
    return {
        service: {"LAKU_DATABASE_URL": url, "LAKU_DATABASE_URLS": "{}"}
        for service, url in urls.items()
    }
