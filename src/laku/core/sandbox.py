"""What every provider sandbox shares: a FastAPI app with `/health` and `/ready`, and webhook
delivery retried with back-off the way providers deliver theirs."""

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

import httpx
from fastapi import FastAPI
from pydantic import BaseModel

from laku.core.http import new_http_client
from laku.core.schemas import WireModel
from laku.core.settings import Settings, get_settings
from laku.core.tracing import FASTAPI_TELEMETRY_OFF, TracingMiddleware, configure_tracing

AttemptRecorder = Callable[[int, int | None, str | None], None]
"""Told of each try at delivering a webhook: its number, the answer's status (None: no answer)
and the error."""


class SandboxHealth(BaseModel):
    status: str
    sandbox: str


def create_sandbox_app(name: str, **fastapi_options) -> FastAPI:
    # Traced like a service: a call into a provider shows in the trace of what made it.
    configure_tracing(get_settings(), f"{name}-sandbox")
    app = FastAPI(title=f"laku {name} sandbox", telemetry=FASTAPI_TELEMETRY_OFF, **fastapi_options)
    app.add_middleware(TracingMiddleware)

    @app.get("/health", response_model=SandboxHealth, tags=["ops"])
    @app.get("/ready", response_model=SandboxHealth, tags=["ops"])
    async def health() -> SandboxHealth:
        return SandboxHealth(status="ok", sandbox=name)

    return app


def delivered(response_status: int | None) -> bool:
    return response_status is not None and 200 <= response_status < 300


class WebhookSender:
    """POSTs webhooks after the caller has been answered, each retried after the given delays
    until it is answered 2xx, then given up (so receivers must accept late and repeated ones).
    `headers` are sent with every try."""

    def __init__(
        self,
        settings: Settings,
        *,
        headers: Callable[[], dict[str, str]],
        retry_delays_seconds: Sequence[float],
    ) -> None:
        self._http = new_http_client(settings.http_timeout_seconds)
        self.headers = headers
        self._delays = (0.0, *retry_delays_seconds)
        # Kept so deliveries in flight are not garbage-collected, and are cancelled on shutdown.
        self._tasks: set[asyncio.Task[None]] = set()

    def deliver(self, url: str, payload: dict[str, Any], record: AttemptRecorder) -> None:
        """Send `payload` in the background; `record` is told of every attempt."""
        task = asyncio.create_task(self._deliver(url, payload, record))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @asynccontextmanager
    async def lifespan(self, _: FastAPI) -> AsyncIterator[None]:
        """The sandbox app's: at shutdown, deliveries stop and the client closes."""
        yield
        for task in list(self._tasks):
            task.cancel()
        await self._http.aclose()

    async def _deliver(self, url: str, payload: dict[str, Any], record: AttemptRecorder) -> None:
        for attempt, delay in enumerate(self._delays, start=1):
            await asyncio.sleep(delay)
            response_status: int | None = None
            error: str | None = None
            try:
                response = await self._http.post(url, json=payload, headers=self.headers())
                response_status = response.status_code
            except httpx.HTTPError as exc:
                error = repr(exc)
            record(attempt, response_status, error)
            if delivered(response_status):
                return


class WebhookAttempt(WireModel):
    """One try at delivering one webhook; `delivery` numbers the webhooks sent. A sandbox's
    attempts add what their webhook is about, read from its payload (`AliasPath("payload",
    ...)`)."""

    delivery: int
    attempt: int
    url: str
    headers: dict[str, str]
    payload: dict[str, Any]
    response_status: int | None
    error: str | None
    delivered: bool
    at: datetime


Attempt = TypeVar("Attempt", bound=WebhookAttempt)


class WebhookLog(Generic[Attempt]):
    """Numbers the webhooks it sends through `sender` and keeps every try at delivering them,
    as `attempt`s (a sandbox lists them under /sandbox)."""

    def __init__(self, sender: WebhookSender, attempt: type[Attempt]) -> None:
        self._sender = sender
        self._attempt = attempt
        self.attempts: list[Attempt] = []
        self._sent = 0

    def send(self, url: str, payload: dict[str, Any]) -> None:
        """Deliver `payload` after the caller has been answered, keeping each try."""
        self._sent += 1
        delivery, headers = self._sent, self._sender.headers()

        def record(attempt: int, response_status: int | None, error: str | None) -> None:
            self.attempts.append(
                self._attempt(
                    delivery=delivery,
                    attempt=attempt,
                    url=url,
                    headers=headers,
                    payload=payload,
                    response_status=response_status,
                    error=error,
                    delivered=delivered(response_status),
                    at=datetime.now(UTC),
                )
            )

        self._sender.deliver(url, payload, record)
