"""Async PostgreSQL access: one engine per process, one schema per service."""

import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ColumnElement,
    DateTime,
    MetaData,
    Table,
    Text,
    bindparam,
    func,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, Insert, insert
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Mapped, mapped_column, registry
from sqlalchemy.sql.selectable import TableValuedAlias
from sqlalchemy.types import TypeEngine

from laku.core.settings import Settings

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


# The column type of a `Mapped[...]` attribute that names none: every moment is a moment in
# time (with its zone); whole numbers are BIGINT, since rupiah amounts and stock outgrow
# INTEGER (a column that stays small says `Integer`); text is TEXT unless its column gives
# it a length (`String(16)`); a document is JSONB.
COLUMN_TYPES: dict[Any, TypeEngine[Any]] = {
    datetime: DateTime(timezone=True),
    int: BigInteger(),
    str: Text(),
    dict[str, Any]: JSONB(),
}

# A moment the database sets when the row is inserted.
InsertedAt = Annotated[datetime, mapped_column(server_default=func.now())]


def one_of(
    column: str, values: Iterable[str], *, name: str | None = None, nullable: bool = False
) -> CheckConstraint:
    """The CHECK that `column` holds one of `values` (or, `nullable`, none), named
    `<column>_known` unless `name` says otherwise."""
    listed = ", ".join(f"'{value}'" for value in values)
    condition = f"{column} IN ({listed})"
    if nullable:
        condition = f"{column} IS NULL OR {condition}"
    return CheckConstraint(condition, name=name or f"{column}_known")


def array_rows(*columns: tuple[str, TypeEngine[Any], list[Any]]) -> TableValuedAlias:
    """Parallel lists (name, type, values) as the rows of a table: `unnest` of one array
    parameter each. A statement written over it is the same however many rows it takes, so it
    is compiled once and cached, where a multi-row VALUES is compiled again for every count."""
    return (
        func.unnest(*(bindparam(None, values, type_=ARRAY(type_)) for _, type_, values in columns))
        .table_valued(*(name for name, _, _ in columns))
        .render_derived()
    )


def insert_rows(table: Table, rows: TableValuedAlias, **same: ColumnElement[Any]) -> Insert:
    """INSERT into `table` every row of `rows` (`array_rows`), each with the values `same`
    gives the other columns it names."""
    return insert(table).from_select([*rows.c.keys(), *same], select(*rows.c, *same.values()))


def service_metadata(schema: str) -> MetaData:
    return MetaData(schema=schema, naming_convention=NAMING_CONVENTION)


def service_registry(schema: str) -> registry:
    """What a service's declarative base is built on: `registry = service_registry("order")`
    puts its tables in its own schema, names their constraints alike and types their columns
    by `COLUMN_TYPES`."""
    return registry(metadata=service_metadata(schema), type_annotation_map=COLUMN_TYPES)


class TimestampMixin:
    created_at: Mapped[InsertedAt]
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())


class UUIDPrimaryKey:
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)


def async_url(url: str) -> str:
    """Accept plain `postgresql://` URLs (as pgserver and most hosts give them) and use asyncpg."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    return parsed.render_as_string(hide_password=False)


def require_database_url(settings: Settings, service: str | None = None) -> str:
    """The database of `service` (its own, else the shared one); of the platform without one."""
    url = settings.database_url_for(service) if service else settings.database_url
    if not url:
        raise RuntimeError(
            "LAKU_DATABASE_URL is not set; `laku up` sets it (embedded PostgreSQL) for its services"
        )
    return async_url(url)


class Database:
    """The engine and session factory of one service process."""

    def __init__(
        self, url: str, *, pool_size: int = 3, max_overflow: int = 2, pool_timeout: float = 30
    ):
        # No ping before each checkout (a round trip per transaction): a connection the server
        # dropped fails its query once, and SQLAlchemy then discards the pool's stale ones.
        self.engine: AsyncEngine = create_async_engine(
            url,
            pool_size=pool_size,
            max_overflow=max_overflow,
            pool_timeout=pool_timeout,
            pool_recycle=1800,
        )
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    async def session(self) -> AsyncIterator[AsyncSession]:
        async with self.sessions() as session:
            yield session

    @asynccontextmanager
    async def autocommit(self) -> AsyncIterator[AsyncSession]:
        """A session whose statements each commit on their own: no BEGIN and COMMIT round trips,
        and no row lock held between two statements while the event loop is busy elsewhere.
        For reads that need no snapshot in common, and for work that is one statement."""
        async with self.sessions() as session:
            await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
            yield session

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()
