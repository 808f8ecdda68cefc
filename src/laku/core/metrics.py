"""Prometheus metrics every service serves at `/metrics`.

Requests are counted by route template (`/api/group-buying/{session_id}`, not the id), so the
series stay few. The database pool and the outbox are read when scraped. A service adds its
business figures as `DatabaseGauge`s: totals read from its own tables when scraped, so every
replica reports the same value (aggregate them with `max`, not `sum`).
"""

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest
from sqlalchemy import Table, text
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from laku.core.db import Database
from laku.core.middleware import HTTPMiddleware, ResponseStart
from laku.core.outbox import summarize

REQUESTS = Counter(
    "laku_http_requests", "HTTP requests served, by route template", ["method", "route", "status"]
)
REQUEST_SECONDS = Histogram(
    "laku_http_request_duration_seconds",
    "Time to serve an HTTP request, by route template",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
POOL_IN_USE = Gauge("laku_db_pool_in_use", "Database connections checked out of the pool")
POOL_IDLE = Gauge("laku_db_pool_idle", "Database connections idle in the pool")
POOL_WAITING = Gauge("laku_db_pool_waiting", "Requests for a database connection not yet given one")
OUTBOX_PENDING = Gauge(
    "laku_outbox_pending", "Outbox rows waiting for delivery (neither delivered nor dead-lettered)"
)
OUTBOX_OLDEST_PENDING = Gauge(
    "laku_outbox_oldest_pending_age_seconds", "Age of the oldest outbox row waiting for delivery"
)
OUTBOX_DEAD_LETTERS = Gauge(
    "laku_outbox_dead_letters",
    "Outbox rows refused for good, by kind, waiting for an admin to read or requeue them",
    ["kind"],
)

UNMATCHED_ROUTE = "unmatched"
_UNTIMED = frozenset({"/metrics", "/health", "/ready"})


@dataclass(frozen=True)
class DatabaseGauge:
    """A business figure read from the service's tables when scraped. `query` returns rows of
    label values followed by the value (`SELECT status, count(*) ... GROUP BY status`)."""

    name: str
    documentation: str
    query: str
    labels: tuple[str, ...] = ()

    def gauge(self) -> Gauge:
        return _gauge(self.name, self.documentation, self.labels)


_gauges: dict[str, Gauge] = {}


def _gauge(name: str, documentation: str, labels: tuple[str, ...]) -> Gauge:
    """One gauge per name in the process, however many apps it builds (the tests build some)."""
    if name not in _gauges:
        _gauges[name] = Gauge(name, documentation, labels)
    return _gauges[name]


class MetricsMiddleware(HTTPMiddleware):
    """Counts and times every request under the route it matched."""

    passed_paths = _UNTIMED

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        response = ResponseStart(send)
        try:
            await self.app(scope, receive, response)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or UNMATCHED_ROUTE
            method = scope["method"]
            REQUESTS.labels(method, template, str(response.status)).inc()
            REQUEST_SECONDS.labels(method, template).observe(time.perf_counter() - started)


def track_pool_waits(db: Database) -> None:
    """Count the callers waiting in the pool's checkout for a connection to be returned
    (SQLAlchemy's pool reports what is checked out, not who waits)."""
    pool: Any = db.engine.sync_engine.pool
    checkout = pool._do_get

    def counted_checkout() -> Any:
        # Only a caller that finds no idle connection and no overflow left waits; one that
        # takes an idle connection or opens a new one is not counted (the periodic work's
        # checkouts would otherwise show as waits).
        if pool.checkedin() > 0 or pool.overflow() < pool._max_overflow:
            return checkout()
        POOL_WAITING.inc()
        try:
            return checkout()
        finally:
            POOL_WAITING.dec()

    pool._do_get = counted_checkout


async def render(
    request: Request, outbox: Table | None, business: Sequence[DatabaseGauge]
) -> Response:
    """The `/metrics` answer: figures read from the pool and the database now, then every metric."""
    db: Database = request.app.state.db
    pool: Any = db.engine.sync_engine.pool
    POOL_IN_USE.set(pool.checkedout())
    POOL_IDLE.set(pool.checkedin())
    async with db.sessions() as session:
        if outbox is not None:
            summary = await summarize(session, outbox)
            OUTBOX_PENDING.set(summary.pending)
            OUTBOX_OLDEST_PENDING.set(summary.oldest_pending_age_seconds or 0)
            OUTBOX_DEAD_LETTERS.clear()
            for kind, count in summary.dead_letters_by_kind.items():
                OUTBOX_DEAD_LETTERS.labels(kind).set(count)
        for spec in business:
            gauge = spec.gauge()
            rows = (await session.execute(text(spec.query))).all()
            if spec.labels:
                gauge.clear()
                for *labels, value in rows:
                    gauge.labels(*labels).set(value or 0)
            else:
                gauge.set((rows[0][0] if rows else 0) or 0)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
