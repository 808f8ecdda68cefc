"""Alembic per service: each service's `migrations/` folder, version table in its own schema."""

import asyncio
from collections.abc import Mapping

from alembic import command, context
from alembic.config import Config
from sqlalchemy import MetaData, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from laku.core.db import async_url
from laku.core.services import SERVICES


def alembic_config(service: str, database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", f"{SERVICES[service].package}:migrations")
    config.set_main_option("sqlalchemy.url", async_url(database_url).replace("%", "%%"))
    return config


def run_migrations(metadata: MetaData) -> None:
    """Body of every service's `migrations/env.py` (online mode only: we always have a server)."""
    url = context.config.get_main_option("sqlalchemy.url")
    assert url and metadata.schema
    asyncio.run(_run_online(url, metadata))


async def _run_online(url: str, metadata: MetaData) -> None:
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{metadata.schema}"'))
            await conn.run_sync(_run_in_connection, metadata)
            await conn.commit()
    finally:
        await engine.dispose()


def _run_in_connection(connection: Connection, metadata: MetaData) -> None:
    schema = metadata.schema

    def include_name(name: str | None, type_: str, parent_names: dict) -> bool:
        return name == schema if type_ == "schema" else True

    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table_schema=schema,
        include_schemas=True,
        include_name=include_name,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def ensure_database(database_url: str) -> None:
    """Create the configured database if the server does not have it yet."""
    url = make_url(async_url(database_url))
    engine = create_async_engine(
        url.set(database="postgres"), poolclass=NullPool, isolation_level="AUTOCOMMIT"
    )
    try:
        async with engine.connect() as conn:
            exists = await conn.scalar(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": url.database}
            )
            if not exists:
                await conn.execute(text(f'CREATE DATABASE "{url.database}"'))
    finally:
        await engine.dispose()


def migrate(
    database_url: str,
    services: list[str] | None = None,
    database_urls: Mapping[str, str] | None = None,
) -> None:
    """Upgrade each service's schema in its database: its own from `database_urls` if it has
    one, else `database_url`. Creates the databases that do not exist yet."""
    own = database_urls or {}
    names = list(SERVICES) if services is None else services
    urls = {service: own.get(service, database_url) for service in names}
    for url in dict.fromkeys([database_url, *urls.values()]):
        asyncio.run(ensure_database(url))
    for service, url in urls.items():
        command.upgrade(alembic_config(service, url), "head")


def make_revision(service: str, database_url: str, message: str) -> None:
    command.revision(alembic_config(service, database_url), message=message, autogenerate=True)
