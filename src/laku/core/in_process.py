"""Calls between services hosted in one process (laku.core.hosting), made without the network.

A call still goes through the caller's client and the callee's whole app (its middleware,
authentication, validation and JSON answer): only the socket between them is left out, and
with it the HTTP encoding, the two kernel hops and the client's connection pool. The callee
runs in a task of its own, as a request received over HTTP does: a caller that times out or
is cancelled does not cancel the work it asked for, and the caller's timeout still applies."""

import asyncio
import contextvars
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import structlog
from starlette.types import ASGIApp, Message

log = structlog.get_logger()

_WILDCARDS = frozenset({"0.0.0.0", "::", ""})
_LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})
# Who the callee sees calling, as a loopback connection would show it (rate limits count by
# address; the proxy headers of a loopback caller are trusted as before).
_CALLER = ("127.0.0.1", 0)


@dataclass(frozen=True)
class HostedApp:
    """An app this process serves: `app` as its server runs it, on `host`; `context` what each
    of its requests starts from (the service named in its log lines); `serving` whether its
    server accepts requests now (started, not stopping), as its port would."""

    app: ASGIApp
    host: str
    context: contextvars.Context
    serving: Callable[[], bool]


_hosted: dict[int, HostedApp] = {}


def serve_in_process(port: int, hosted: HostedApp) -> None:
    """Calls from this process to `port` go to `hosted` while it is serving."""
    _hosted[port] = hosted


def _hosted_for(url: httpx.URL) -> HostedApp | None:
    hosted = _hosted.get(url.port or 80)
    if hosted is None or not hosted.serving():
        return None
    if url.host == hosted.host or (hosted.host in _WILDCARDS | _LOOPBACK and url.host in _LOOPBACK):
        return hosted
    return None


@dataclass
class _Call:
    request: httpx.Request
    body: bytes
    status: int | None = None
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    parts: list[bytes] = field(default_factory=list)
    body_sent: bool = False
    complete: bool = False
    answered: asyncio.Event = field(default_factory=asyncio.Event)

    def scope(self) -> dict[str, Any]:
        url = self.request.url
        return {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": self.request.method,
            "scheme": url.scheme,
            "path": url.path,
            "raw_path": url.raw_path.split(b"?")[0],
            "query_string": url.query,
            "root_path": "",
            "headers": [(key.lower(), value) for key, value in self.request.headers.raw],
            "client": _CALLER,
            "server": (url.host, url.port),
            "state": {},
        }

    async def receive(self) -> Message:
        if not self.body_sent:
            self.body_sent = True
            return {"type": "http.request", "body": self.body, "more_body": False}
        await self.answered.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.headers = list(message.get("headers", []))
        elif message["type"] == "http.response.body":
            self.parts.append(message.get("body", b""))
            if not message.get("more_body", False):
                self.complete = True
                self.answered.set()

    async def run(self, app: ASGIApp) -> None:
        try:
            await app(self.scope(), self.receive, self.send)
        except Exception:
            # What uvicorn does with an app's exception: logged, and a 500 if nothing was sent.
            log.exception("in_process_call_failed", path=self.request.url.path)
            if self.status is None:
                self.status, self.parts = 500, [b"Internal Server Error"]
                self.headers = [(b"content-type", b"text/plain; charset=utf-8")]
                self.complete = True
        finally:
            self.answered.set()

    def response(self) -> httpx.Response:
        if self.status is None or not self.complete:
            # As a connection closed mid-answer: the client may ask again.
            raise httpx.RemoteProtocolError("The app sent no complete answer", request=self.request)
        return httpx.Response(
            self.status, headers=self.headers, stream=httpx.ByteStream(b"".join(self.parts))
        )


class InProcessTransport(httpx.AsyncBaseTransport):
    """Sends a request to the app this process hosts at its address, else over the network."""

    def __init__(self, network: httpx.AsyncBaseTransport):
        self._network = network
        self._running: set[asyncio.Task[None]] = set()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        hosted = _hosted_for(request.url)
        if hosted is None:
            return await self._network.handle_async_request(request)
        call = _Call(request, await request.aread())
        task = asyncio.create_task(call.run(hosted.app), context=hosted.context.copy())
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        try:
            async with asyncio.timeout(request.extensions.get("timeout", {}).get("read")):
                await asyncio.shield(call.answered.wait())
        except TimeoutError as exc:
            raise httpx.ReadTimeout("No answer in time", request=request) from exc
        return call.response()

    async def aclose(self) -> None:
        await self._network.aclose()
