"""The FastAPI factory every service builds on: lifespan, middleware, errors, health."""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import Response
from pydantic import BaseModel
from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncSession

from laku.core.db import Database, require_database_url
from laku.core.errors import UpstreamUnavailable, install_error_handlers
from laku.core.http import ServiceClient, ServiceTokenSource, new_http_client
from laku.core.idempotency import IdempotencyMiddleware, purge_expired_keys
from laku.core.logging import configure_logging
from laku.core.metrics import DatabaseGauge, MetricsMiddleware, render, track_pool_waits
from laku.core.middleware import BodyLimitMiddleware, RequestContextMiddleware
from laku.core.outbox import Batched, Handler, OutboxRelay, purge_delivered
from laku.core.outbox_admin import outbox_admin_router
from laku.core.rate_limit import purge_ended_windows
from laku.core.retention import Purge, RetentionSweeper
from laku.core.security import TokenVerifier, public, publish_access_rules, service_credential
from laku.core.services import SERVICES, service_url
from laku.core.settings import Settings, get_settings
from laku.core.tracing import FASTAPI_TELEMETRY_OFF, TracingMiddleware, configure_tracing

StartupHook = Callable[[FastAPI], Awaitable[None]]
OutboxHandlers = Callable[[FastAPI], Mapping[str, Handler | Batched]]
Purges = Callable[[FastAPI], Mapping[str, Purge]]


def run_in_background(
    app: FastAPI, work: Coroutine[Any, Any, None], name: str
) -> asyncio.Task[None]:
    """Run periodic work (a schedule, a sweeper) for as long as the service runs. At shutdown
    it is cancelled after the requests in flight have finished and before the pools close."""
    task = asyncio.create_task(work, name=name)
    app.state.background_tasks.append(task)
    return task


async def _stop_background(app: FastAPI) -> None:
    tasks = app.state.background_tasks
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


class Health(BaseModel):
    status: str
    service: str


def create_service_app(
    service: str,
    routers: list[APIRouter],
    idempotency_keys: Table,
    *,
    idempotent_by_body: frozenset[str] = frozenset(),
    startup: StartupHook | None = None,
    outbox: tuple[Table, OutboxHandlers] | None = None,
    retention: Purges | None = None,
    rate_limits: Table | None = None,
    settings: Settings | None = None,
    metrics: Sequence[DatabaseGauge] = (),
) -> FastAPI:
    """`idempotent_by_body`: POST paths that are idempotent by a reference in their body, so
    the `Idempotency-Key` store is skipped for them.
    `outbox`: the service's outbox table and a function giving its handlers once the app has
    started; a relay then delivers it in the background as `app.state.outbox_relay`, and
    admins see it under /api/admin/outbox.
    `retention`: the service's own purges (beyond old idempotency keys and delivered outbox
    rows, which every service purges), run every `retention_interval_seconds` as background
    work.
    `rate_limits`: the service's rate-limit counters (laku.core.rate_limit), whose ended
    windows the same retention sweep deletes.
    `metrics`: the service's business figures, served at `/metrics` with the kernel's own.

    Shutdown (SIGTERM): uvicorn stops accepting and lets the requests in flight finish; then
    the relay and the background work stop, and only then the HTTP client and the pool close,
    so nothing still running loses its connections."""
    settings = settings or get_settings()
    spec = SERVICES[service]

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(settings, service)
        configure_tracing(settings, service)
        app.state.settings = settings
        app.state.background_tasks = []
        app.state.db = Database(
            require_database_url(settings, service),
            pool_size=settings.database_pool_size,
            max_overflow=settings.database_max_overflow,
        )
        track_pool_waits(app.state.db)
        app.state.http = new_http_client(settings.http_timeout_seconds)
        auth_url = service_url("auth", settings)
        app.state.token_verifier = TokenVerifier(
            f"{auth_url}/.well-known/jwks.json",
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            http=app.state.http,
        )
        app.state.service_tokens = ServiceTokenSource(
            app.state.http, auth_url, service, own_service_credential(settings, service)
        )
        run_in_background(
            app,
            app.state.token_verifier.follow_revocations(
                f"{auth_url}/api/auth/revocations",
                app.state.service_tokens,
                settings.revocation_poll_interval_seconds,
            ),
            "revocations",
        )
        if startup is not None:
            await startup(app)
        if outbox is not None:
            table, handlers = outbox
            app.state.outbox_relay = OutboxRelay(app.state.db, table, handlers(app))
            app.state.outbox_relay.start()
        sweeper = _retention_sweeper(
            app, settings, idempotency_keys, outbox, retention, rate_limits
        )
        if sweeper is not None:
            run_in_background(app, sweeper.run(), "retention-sweeper")
        try:
            yield
        finally:
            if outbox is not None:
                await app.state.outbox_relay.stop()
            await _stop_background(app)
            await app.state.http.aclose()
            await app.state.db.dispose()

    app = FastAPI(
        title=f"laku {service}-service",
        version="0.1.0",
        lifespan=lifespan,
        description=f"Laku {service}-service (port {spec.port}).",
        telemetry=FASTAPI_TELEMETRY_OFF,
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
    app.add_middleware(MetricsMiddleware)
    app.add_middleware(TracingMiddleware)

    @app.get("/health", response_model=Health, tags=["ops"], dependencies=[Depends(public)])
    async def health() -> Health:
        return Health(status="ok", service=service)

    @app.get("/ready", response_model=Health, tags=["ops"], dependencies=[Depends(public)])
    async def ready(request: Request) -> Health:
        try:
            await request.app.state.db.ping()
        except Exception as exc:
            raise UpstreamUnavailable("Database unreachable") from exc
        return Health(status="ready", service=service)

    @app.get("/metrics", tags=["ops"], include_in_schema=False)
    async def metrics_endpoint(request: Request) -> Response:
        return await render(request, outbox[0] if outbox else None, metrics)

    for router in routers:
        app.include_router(router)
    if outbox is not None:
        app.include_router(outbox_admin_router(outbox[0]))
    publish_access_rules(app)
    return app


ClientType = TypeVar("ClientType", bound=ServiceClient)


def service_client(app: FastAPI, client_type: type[ClientType], service: str) -> ClientType:
    """A client of another service, sharing this one's HTTP pool and service token."""
    state = app.state
    return client_type(service_url(service, state.settings), state.http, state.service_tokens)


def own_service_credential(settings: Settings, service: str) -> str:
    """The credential this service presents for its service token: the one it was given
    (production: each service only its own), else derived from the shared secret."""
    if settings.service_credential is not None:
        return settings.service_credential.get_secret_value()
    return service_credential(settings.service_secret.get_secret_value(), service)


def _retention_sweeper(
    app: FastAPI,
    settings: Settings,
    idempotency_keys: Table,
    outbox: tuple[Table, OutboxHandlers] | None,
    retention: Purges | None,
    rate_limits: Table | None,
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
    if rate_limits is not None:
        purges["rate_limits"] = lambda: purge_ended_windows(db, rate_limits)
    if retention is not None:
        purges.update(retention(app))
    return RetentionSweeper(purges, timedelta(seconds=settings.retention_interval_seconds))


async def _session(request: Request) -> AsyncIterator[AsyncSession]:
    async with request.app.state.db.sessions() as session:
        yield session


DbSession = Annotated[AsyncSession, Depends(_session)]
