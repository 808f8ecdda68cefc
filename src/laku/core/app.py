"""The FastAPI factory every service builds on: lifespan, middleware, errors, health."""

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Request
from pydantic import BaseModel
from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncSession

from laku.core.db import Database, require_database_url
from laku.core.errors import UpstreamUnavailable, install_error_handlers
from laku.core.http import ServiceTokenSource, new_http_client
from laku.core.idempotency import IdempotencyMiddleware, purge_expired_keys
from laku.core.logging import configure_logging
from laku.core.middleware import BodyLimitMiddleware, RequestContextMiddleware
from laku.core.outbox import Batched, Handler, OutboxRelay, purge_delivered
from laku.core.outbox_admin import outbox_admin_router
from laku.core.retention import Purge, RetentionSweeper
from laku.core.security import TokenVerifier
from laku.core.services import SERVICES, service_url
from laku.core.settings import Settings, get_settings

StartupHook = Callable[[FastAPI], Awaitable[None]]
OutboxHandlers = Callable[[FastAPI], Mapping[str, Handler | Batched]]
Purges = Callable[[FastAPI], Mapping[str, Purge]]


class Health(BaseModel):
    status: str
    service: str


def create_service_app(
    service: str,
    *,
    routers: list[APIRouter],
    idempotency_keys: Table,
    idempotent_by_body: frozenset[str] = frozenset(),
    startup: StartupHook | None = None,
    outbox: tuple[Table, OutboxHandlers] | None = None,
    retention: Purges | None = None,
    settings: Settings | None = None,
) -> FastAPI:
    """`idempotent_by_body`: POST paths that are idempotent by a reference in their body, so
    the `Idempotency-Key` store is skipped for them.
    `outbox`: the service's outbox table and a function giving its handlers once the app has
    started; a relay then delivers it in the background as `app.state.outbox_relay`, and
    admins see it under /api/admin/outbox.
    `retention`: the service's own purges (beyond old idempotency keys and delivered outbox
    rows, which every service purges), run every `retention_interval_seconds`."""
    settings = settings or get_settings()
    spec = SERVICES[service]

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(settings, service)
        app.state.settings = settings
        app.state.db = Database(
            require_database_url(settings),
            pool_size=settings.database_pool_size,
            max_overflow=settings.database_max_overflow,
        )
        app.state.http = new_http_client(settings.http_timeout_seconds)
        auth_url = service_url("auth", settings)
        app.state.token_verifier = TokenVerifier(
            f"{auth_url}/.well-known/jwks.json",
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            http=app.state.http,
        )
        app.state.service_tokens = ServiceTokenSource(
            app.state.http, auth_url, service, settings.service_secret.get_secret_value()
        )
        if startup is not None:
            await startup(app)
        if outbox is not None:
            table, handlers = outbox
            app.state.outbox_relay = OutboxRelay(app.state.db, table, handlers(app))
            app.state.outbox_relay.start()
        sweeper = _retention_sweeper(app, settings, idempotency_keys, outbox, retention)
        if sweeper is not None:
            sweeper.start()
        try:
            yield
        finally:
            if sweeper is not None:
                await sweeper.stop()
            if outbox is not None:
                await app.state.outbox_relay.stop()
            await app.state.http.aclose()
            await app.state.db.dispose()

    app = FastAPI(
        title=f"laku {service}-service",
        version="0.1.0",
        lifespan=lifespan,
        description=f"Laku {service}-service (port {spec.port}).",
    )
    install_error_handlers(app)
    # Added innermost first: the body limit runs before idempotency reads the body.
    app.add_middleware(
        IdempotencyMiddleware,
        table=idempotency_keys,
        state=app.state,
        idempotent_by_body=idempotent_by_body,
    )
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestContextMiddleware)

    @app.get("/health", response_model=Health, tags=["ops"])
    async def health() -> Health:
        return Health(status="ok", service=service)

    @app.get("/ready", response_model=Health, tags=["ops"])
    async def ready(request: Request) -> Health:
        try:
            await request.app.state.db.ping()
        except Exception as exc:
            raise UpstreamUnavailable("Database unreachable") from exc
        return Health(status="ready", service=service)

    for router in routers:
        app.include_router(router)
    if outbox is not None:
        app.include_router(outbox_admin_router(outbox[0]))
    return app


def _retention_sweeper(
    app: FastAPI,
    settings: Settings,
    idempotency_keys: Table,
    outbox: tuple[Table, OutboxHandlers] | None,
    retention: Purges | None,
) -> RetentionSweeper | None:
    if settings.retention_interval_seconds <= 0:
        return None
    db: Database = app.state.db
    keys_kept = timedelta(hours=settings.idempotency_key_retention_hours)
    purges: dict[str, Purge] = {
        "idempotency_keys": lambda: purge_expired_keys(db, idempotency_keys, keys_kept)
    }
    if outbox is not None:
        outbox_table, outbox_kept = outbox[0], timedelta(hours=settings.outbox_retention_hours)
        purges["outbox"] = lambda: purge_delivered(db, outbox_table, outbox_kept)
    if retention is not None:
        purges.update(retention(app))
    return RetentionSweeper(purges, timedelta(seconds=settings.retention_interval_seconds))


async def _session(request: Request) -> AsyncIterator[AsyncSession]:
    async with request.app.state.db.sessions() as session:
        yield session


DbSession = Annotated[AsyncSession, Depends(_session)]
