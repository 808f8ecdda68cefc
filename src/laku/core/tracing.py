"""Traces (OpenTelemetry): one trace per request, continued through every service call (W3C
`traceparent` on the kernel's HTTP client) and through the outbox (the context is stored with
the row, and its delivery continues the trace that enqueued it).

Spans are exported over OTLP/HTTP when `LAKU_OTLP_ENDPOINT` (or the standard
`OTEL_EXPORTER_OTLP_ENDPOINT`) is set, and appended as JSON lines to a file per process under
`LAKU_TRACE_DIR` when that is set; otherwise none are exported, but trace ids are still made,
carried on calls and written on log lines.
"""

import json
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from starlette.types import Receive, Scope, Send

from laku.core.middleware import HTTPMiddleware, ResponseStart
from laku.core.settings import Settings

tracer = trace.get_tracer("laku")
# FastAPI's own telemetry (recent versions) would add a second server span per request and a
# span per dependency; the kernel's middleware makes the one server span, on any version.
FASTAPI_TELEMETRY_OFF = {
    "tracing": False,
    "metrics": False,
    "logs": False,
    "operation_spans": False,
}
_UNTRACED = frozenset({"/metrics", "/health", "/ready"})
_configured = False


class JsonLinesExporter(SpanExporter):
    """Appends each finished span to a file as one JSON line (local debugging, the tests)."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._path = path
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = [json.dumps(span_record(span)) + "\n" for span in spans]
        with self._lock, self._path.open("a") as out:
            out.writelines(lines)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


def span_record(span: ReadableSpan) -> dict[str, Any]:
    context_ = span.get_span_context()
    return {
        "traceId": format(context_.trace_id, "032x"),
        "spanId": format(context_.span_id, "016x"),
        "parentSpanId": format(span.parent.span_id, "016x") if span.parent else None,
        "name": span.name,
        "kind": span.kind.name,
        "service": span.resource.attributes.get("service.name"),
        "attributes": dict(span.attributes or {}),
        "links": [format(link.context.span_id, "016x") for link in span.links],
    }


def configure_tracing(settings: Settings, service: str) -> None:
    """Once per process: name the service and choose where spans go."""
    global _configured
    if _configured:
        return
    _configured = True
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    endpoint = settings.otlp_endpoint or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{endpoint.rstrip('/')}/v1/traces"))
        )
    if settings.trace_dir is not None:
        path = settings.trace_dir / f"{service}-{os.getpid()}.jsonl"
        provider.add_span_processor(SimpleSpanProcessor(JsonLinesExporter(path)))
    trace.set_tracer_provider(provider)


def current_trace_id() -> str | None:
    span_context = trace.get_current_span().get_span_context()
    return format(span_context.trace_id, "032x") if span_context.is_valid else None


def add_trace_id(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: every log line written inside a trace names it."""
    trace_id = current_trace_id()
    if trace_id:
        event_dict.setdefault("trace_id", trace_id)
    return event_dict


def carrier() -> dict[str, str]:
    """The current trace context as W3C headers, to store with deferred work."""
    headers: dict[str, str] = {}
    propagate.inject(headers)
    return headers


@contextmanager
def continuing(name: str, carriers: Sequence[Mapping[str, str] | None]) -> Iterator[None]:
    """Run deferred work as part of the trace that deferred it: a child of the first carrier's
    span, linked to the others' (a batch of rows from several traces)."""
    parents = [propagate.extract(dict(c)) for c in carriers if c]
    links = [Link(trace.get_current_span(p).get_span_context()) for p in parents[1:]]
    with tracer.start_as_current_span(
        name, context=parents[0] if parents else None, kind=SpanKind.CONSUMER, links=links
    ):
        yield


class TracingMiddleware(HTTPMiddleware):
    """A server span per request, continuing the caller's trace from its `traceparent`."""

    passed_paths = _UNTRACED

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        method = scope["method"]
        response = ResponseStart(send)
        with tracer.start_as_current_span(
            f"{method} {scope['path']}", context=propagate.extract(headers), kind=SpanKind.SERVER
        ) as span:
            try:
                await self.app(scope, receive, response)
            finally:
                route = getattr(scope.get("route"), "path", None)
                if route:
                    span.update_name(f"{method} {route}")
                    span.set_attribute("http.route", route)
                span.set_attribute("http.request.method", method)
                span.set_attribute("http.response.status_code", response.status)
                if response.status >= 500:
                    span.set_status(Status(StatusCode.ERROR))


class TracingTransport(httpx.AsyncBaseTransport):
    """A client span per outgoing request, its context sent on as `traceparent`."""

    def __init__(self, inner: httpx.AsyncBaseTransport):
        self._inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        with tracer.start_as_current_span(
            f"{request.method} {url.host}:{url.port}{url.path}", kind=SpanKind.CLIENT
        ) as span:
            span.set_attribute("server.address", url.host)
            if url.port:
                span.set_attribute("server.port", url.port)
            propagate.inject(request.headers)
            response = await self._inner.handle_async_request(request)
            span.set_attribute("http.response.status_code", response.status_code)
            if response.status_code >= 500:
                span.set_status(Status(StatusCode.ERROR))
            return response

    async def aclose(self) -> None:
        await self._inner.aclose()
