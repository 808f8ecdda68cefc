"""ASGI middleware every service runs: request ids and logs, and a request body limit; and
what every pure ASGI middleware of the platform is built on."""

import re
import time
import uuid
from collections.abc import Callable

import structlog
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from laku.core.errors import PayloadTooLarge, problem_response

REQUEST_ID_HEADER = "x-request-id"
# A caller's request id is echoed and logged only when it is short and made of these characters;
# anything else (newlines, markup, escape codes, megabytes) is replaced by one of ours.
MAX_REQUEST_ID_LENGTH = 128
_SAFE_REQUEST_ID = re.compile(rf"[A-Za-z0-9._:-]{{1,{MAX_REQUEST_ID_LENGTH}}}")

log = structlog.get_logger()


def header(scope: Scope, name: str) -> str | None:
    wanted = name.encode()
    for key, value in scope["headers"]:
        if key == wanted:
            return value.decode("latin-1")
    return None


def safe_request_id(offered: str | None) -> str:
    """The caller's request id if it is safe to log and echo, else a new one."""
    if offered is not None and _SAFE_REQUEST_ID.fullmatch(offered):
        return offered
    return uuid.uuid4().hex


class HTTPMiddleware:
    """A pure ASGI middleware around HTTP requests: `handle` serves each one but those to
    `passed_paths`, which go straight on to the app, as does anything else (the lifespan)."""

    passed_paths: frozenset[str] = frozenset()

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.passed_paths:
            await self.app(scope, receive, send)
            return
        await self.handle(scope, receive, send)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise NotImplementedError


class ResponseStart:
    """`send` for the app a middleware wraps: notes the response's status as it starts (500
    until then: an app that raises starts none) and lets `edit_headers` change its headers."""

    def __init__(
        self, send: Send, edit_headers: Callable[[MutableHeaders], None] | None = None
    ) -> None:
        self._send = send
        self._edit_headers = edit_headers
        self.status = 500

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            if self._edit_headers is not None:
                message.setdefault("headers", [])
                self._edit_headers(MutableHeaders(scope=message))
        await self._send(message)


class RequestContextMiddleware(HTTPMiddleware):
    """Takes or makes the request id, binds it to every log line, returns it, logs the request."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_id = safe_request_id(header(scope, REQUEST_ID_HEADER))
        scope.setdefault("state", {})["request_id"] = request_id
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        response = ResponseStart(
            send, lambda headers: headers.append(REQUEST_ID_HEADER, request_id)
        )
        try:
            await self.app(scope, receive, response)
        finally:
            if scope["path"] not in ("/health", "/ready"):
                log.info(
                    "request",
                    method=scope["method"],
                    path=scope["path"],
                    status=response.status,
                    ms=round((time.perf_counter() - started) * 1000, 1),
                )
            structlog.contextvars.unbind_contextvars("request_id")


class BodyLimitMiddleware(HTTPMiddleware):
    """Refuses bodies over `max_bytes` with 413 before any handler sees them."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        super().__init__(app)
        self.max_bytes = max_bytes

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        too_large = problem_response(
            PayloadTooLarge.status,
            PayloadTooLarge.code,
            PayloadTooLarge.title,
            f"The body may be at most {self.max_bytes} bytes.",
            instance=scope["path"],
        )
        await too_large(scope, receive, send)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        declared = header(scope, "content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if delivered:
                return await receive()
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)
