"""What the tests share: waiting for work done in the background (and for every outbox to have
run, to show that something did not happen), an admin's headers, answers that must succeed,
balances, database snapshots, provider sandboxes' webhooks, problem answers and the deploy
generator. Starting a platform and building the seed's catalog live in `laku.testing`, which the
benches use too."""

import asyncio
import contextvars
import importlib.util
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx
from starlette.types import ASGIApp

from laku.core.in_process import HostedApp, serve_in_process
from laku.testing.database import plain_url, run
from laku.testing.platform import Account, Platform, bearer

ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")
# What a failed wait says: a description, or a function giving one from what it saw last.
Description = str | Callable[[], str] | None


def _timed_out(check: Callable[..., Any], timeout: float, what: Description, last: Any) -> None:
    described = what() if callable(what) else what or getattr(check, "__name__", repr(check))
    raise AssertionError(f"{described}: not within {timeout} s (last answer: {last!r})")


def eventually(
    check: Callable[[], T], timeout: float = 20.0, every: float = 0.1, what: Description = None
) -> T:
    """Call `check` until it answers something truthy (work done in the background: outboxes,
    webhooks, sweeps) and return that; fail the test if it has not within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            _timed_out(check, timeout, what, result)
        time.sleep(every)


async def eventually_async(
    check: Callable[[], Awaitable[T]],
    within: float = 20.0,
    every: float = 0.1,
    what: Description = None,
) -> T:
    """`eventually` for an async test, whose checks await (the loop goes on meanwhile)."""
    deadline = time.monotonic() + within
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            _timed_out(check, within, what, result)
        await asyncio.sleep(every)


# The services whose deferred work goes through an outbox (`<schema>.outbox`).
OUTBOX_SCHEMAS = (
    "group_buying",
    "warehouse",
    "payment",
    "wallet",
    "order",
    "notification",
    "logistics",
    "settlement",
)
OutboxMarks = dict[str, int]


def outbox_marks(platform: Platform, *schemas: str) -> OutboxMarks:
    """The last row each outbox (every one, or `schemas`') holds now."""
    return {
        schema: platform.sql(f'SELECT coalesce(max(id), 0) FROM "{schema}".outbox')[0][0]
        for schema in schemas or OUTBOX_SCHEMAS
    }


def outboxes_done(platform: Platform, marks: OutboxMarks, timeout: float = 30.0) -> None:
    """Wait until every row the outboxes took after `marks` is delivered or dead-lettered: all
    the deferred work queued since then has run. This is how a test shows that something did
    not happen (a second credit, a wrongly queued release): whatever was queued has run, and it
    is not there."""

    # One statement, so one snapshot of them all: a row delivered to a service that queued
    # work of its own in turn is seen with that work.
    query = " UNION ALL ".join(
        f"SELECT '{schema}' AS schema, count(*) AS queued FROM \"{schema}\".outbox"
        f" WHERE id > {last}"
        " AND delivered_at IS NULL AND dead_lettered_at IS NULL"
        for schema, last in marks.items()
    )

    def pending() -> dict[str, int]:
        return {row["schema"]: row["queued"] for row in platform.sql(query) if row["queued"]}

    eventually(lambda: not pending(), timeout, what=lambda: f"outbox rows still queued {pending()}")


def outboxes_idle(platform: Platform, *schemas: str) -> None:
    """Wait until nothing queued in the outboxes of `schemas` (every one if none), by this test
    or an earlier one, is still to run: a whole-schema comparison then starts at rest. Name the
    services whose deferred work writes to the compared schema: another's may wait for good on
    something no test will do (a payout nobody settles in the sandbox)."""
    outboxes_done(platform, dict.fromkeys(schemas or OUTBOX_SCHEMAS, 0))


def admin_headers(platform: Platform) -> dict[str, str]:
    return bearer(platform.admin_token)


def ok(response: httpx.Response, status: int = 200) -> Any:
    """The body of an answer that must have `status`."""
    assert response.status_code == status, response.text
    return response.json()


def balance(platform: Platform, buyer: Account) -> int:
    """The buyer's wallet balance."""
    return ok(platform.client("wallet").get("/api/wallets/me", headers=buyer.headers))["balance"]


def wallet_transactions(platform: Platform, buyer: Account) -> list[dict[str, Any]]:
    """The buyer's wallet transactions, newest first: all of them, on one page."""
    response = platform.client("wallet").get(
        "/api/wallets/me/transactions", params={"limit": 100}, headers=buyer.headers
    )
    assert response.status_code == 200, response.text
    page = response.json()
    assert page["total"] == len(page["items"])
    return page["items"]


async def _snapshot(url: str, schema: str) -> dict[str, str]:
    conn = await asyncpg.connect(plain_url(url))
    try:
        tables = await conn.fetch(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = $1 AND table_name NOT IN "
            "('alembic_version', 'idempotency_keys', 'rate_limits') ORDER BY 1",
            schema,
        )
        digest = {}
        for (table,) in tables:
            # An outbox row's delivery bookkeeping moves on its own; what was enqueued does not.
            row = "(t.id, t.kind, t.payload)" if table == "outbox" else "t"
            digest[table] = await conn.fetchval(
                f"SELECT count(*) || ':' || coalesce(md5(string_agg({row}::text, ',' "
                f'ORDER BY {row}::text)), \'\') FROM "{schema}"."{table}" t'
            )
        return digest
    finally:
        await conn.close()


def snapshot(platform: Platform, *schemas: str) -> dict[str, dict[str, str]]:
    """Row count and content hash of every business table in the given schemas."""
    return {schema: run(_snapshot(platform.database_url, schema)) for schema in schemas}


WebhookAttempt = dict[str, Any]


def sandbox_webhook_attempts(sandbox: httpx.Client, **params: str) -> list[WebhookAttempt]:
    """A provider sandbox's webhook delivery attempts (`GET /sandbox/webhooks`), filtered."""
    response = sandbox.get("/sandbox/webhooks", params=params)
    response.raise_for_status()
    return response.json()


async def wait_for_sandbox_webhooks(
    sandbox: httpx.Client,
    until: Callable[[list[WebhookAttempt]], bool],
    timeout_seconds: float = 5.0,
    **params: str,
) -> list[WebhookAttempt]:
    """Poll the sandbox's attempts until `until` holds; fail with what was seen by then."""
    seen: list[WebhookAttempt] = []

    async def attempts() -> tuple[list[WebhookAttempt]] | None:
        seen[:] = sandbox_webhook_attempts(sandbox, **params)
        return (list(seen),) if until(seen) else None

    [found] = await eventually_async(
        attempts, timeout_seconds, every=0.05, what=lambda: f"webhook attempts so far: {seen}"
    )
    return found


def assert_problem(response: httpx.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json"), response.headers
    body = response.json()
    assert body["status"] == status
    if code is not None:
        assert body["code"] == code, body
    return body


def deploy_generator() -> Any:
    """deploy/generate.py, loaded as a module (deploy/ is not a package)."""
    spec = importlib.util.spec_from_file_location(
        "deploy_generate", ROOT / "deploy" / "generate.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class InProcessApp:
    """`app` served in process (laku.core.in_process) on a loopback port nothing listens on:
    a call that went over the network instead fails to connect. `serving` switches it."""

    def __init__(self, app: ASGIApp):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.serving = True
        hosted = HostedApp(app, "127.0.0.1", contextvars.Context(), lambda: self.serving)
        serve_in_process(self.port, hosted)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"


@contextmanager
def in_process(app: ASGIApp) -> Iterator[InProcessApp]:
    served = InProcessApp(app)
    try:
        yield served
    finally:
        served.serving = False
