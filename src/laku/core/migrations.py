"""Alembic per service: each service's `migrations/` folder, version table in its own schema;
then the service's own PostgreSQL role may use that schema, and only it."""

import asyncio
from collections.abc import Mapping

from alembic import command, context
from alembic.config import Config
from sqlalchemy import MetaData, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from sqlalchemy.pool import NullPool

from laku.core.database_roles import role_password, service_role
from laku.core.db import async_url
from laku.core.services import SERVICES

# What a service does with its own tables and sequences: data, never their definition.
TABLE_PRIVILEGES = "SELECT, INSERT, UPDATE, DELETE"
SEQUENCE_PRIVILEGES = "USAGE, SELECT"


class RoleNotCreatedError(RuntimeError):
    """The migration role may not create a service's role: an operator must (README)."""


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
    role_secret: str | None = None,
) -> None:
    """Upgrade each service's schema in its database: its own from `database_urls` if it has
    one, else `database_url`. Creates the databases that do not exist yet. Then each service's
    role (`laku_<service>`) may use its schema and nothing else; its password is derived from
    `role_secret` when given, else left as it is."""
    own = database_urls or {}
    names = list(SERVICES) if services is None else services
    urls = {service: own.get(service, database_url) for service in names}
    for url in dict.fromkeys([database_url, *urls.values()]):
        asyncio.run(ensure_database(url))
    for service, url in urls.items():
        command.upgrade(alembic_config(service, url), "head")
        password = role_password(role_secret, service_role(service)) if role_secret else None
        asyncio.run(set_up_service_role(url, service, password))


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


async def _owns(conn: AsyncConnection, owner_query: str) -> bool:
    """Whether the migration role has the privileges of the role `owner_query` names."""
    return bool(
        await conn.scalar(text(f"SELECT pg_has_role(current_user, ({owner_query}), 'USAGE')"))
    )


async def restrict_database(conn: AsyncConnection, role: str) -> None:
    """Only the roles granted it (here `role`) may connect; nobody may make temporary tables or
    create objects in `public`. Done only where the migration role owns the database and the
    schema: otherwise the operator's (README)."""
    if await _owns(conn, "SELECT nspowner FROM pg_namespace WHERE nspname = 'public'"):
        await conn.execute(text("REVOKE ALL ON SCHEMA public FROM PUBLIC"))
    if await _owns(conn, "SELECT datdba FROM pg_database WHERE datname = current_database()"):
        database = _ident(await conn.scalar(text("SELECT current_database()")))
        await conn.execute(text(f"REVOKE ALL ON DATABASE {database} FROM PUBLIC"))
        await conn.execute(text(f"GRANT CONNECT ON DATABASE {database} TO {_ident(role)}"))


async def ensure_role(conn: AsyncConnection, role: str) -> None:
    """Create the login role unless it exists. Roles belong to the whole server, so several
    databases on it (the test suite's, run at once) share them and may race to create them."""
    exists = await conn.scalar(text("SELECT 1 FROM pg_roles WHERE rolname = :role"), {"role": role})
    if exists:
        return
    can_create = await conn.scalar(
        text("SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user")
    )
    if not can_create:
        raise RoleNotCreatedError(
            f"PostgreSQL role {role} does not exist and the migration role may not create "
            "roles: create it first (README, 'Database roles')"
        )
    await conn.execute(
        text(
            "DO $$ BEGIN "
            f"CREATE ROLE {_ident(role)} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT; "
            "EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; "
            "END $$"
        )
    )


async def grant_service_schema(conn: AsyncConnection, role: str, schema: str) -> None:
    """The role may use `schema`, and read and write its tables and sequences (those there now
    and, through default privileges, those later migrations create); nothing else. Its
    migration history stays the migration role's."""
    who, where = _ident(role), _ident(schema)
    for statement in (
        f"GRANT USAGE ON SCHEMA {where} TO {who}",
        f"GRANT {TABLE_PRIVILEGES} ON ALL TABLES IN SCHEMA {where} TO {who}",
        f"GRANT {SEQUENCE_PRIVILEGES} ON ALL SEQUENCES IN SCHEMA {where} TO {who}",
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA {where} GRANT {TABLE_PRIVILEGES} ON TABLES TO {who}",
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA {where} "
        f"GRANT {SEQUENCE_PRIVILEGES} ON SEQUENCES TO {who}",
        f"REVOKE ALL ON {where}.alembic_version FROM {who}",
    ):
        await conn.execute(text(statement))


async def set_up_service_role(database_url: str, service: str, password: str | None) -> None:
    """On the service's database, as the migration role: its role exists (with `password`, when
    given) and has its schema, and only that."""
    role = service_role(service)
    engine = create_async_engine(async_url(database_url), poolclass=NullPool)
    try:
        # The role commits on its own first: another database's migration waiting on it then
        # goes on at once.
        async with engine.begin() as conn:
            await ensure_role(conn, role)
        async with engine.begin() as conn:
            if password is not None:
                await conn.execute(text(f"ALTER ROLE {_ident(role)} PASSWORD {_literal(password)}"))
            await restrict_database(conn, role)
            await grant_service_schema(conn, role, SERVICES[service].schema)
    finally:
        await engine.dispose()


def make_revision(service: str, database_url: str, message: str) -> None:
    command.revision(alembic_config(service, database_url), message=message, autogenerate=True)
