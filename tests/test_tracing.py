"""Traces: one join is one trace across group-buying, warehouse, payment and the Xendit sandbox;
a payment's webhook continues its trace through payment's outbox to group-buying; log lines
carry the trace id. Every process writes its spans to a file (`LAKU_TRACE_DIR`), read here."""

import json
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from laku.testing.catalog import create_seed_catalog, created
from laku.testing.platform import Platform
from tests.group_buys import Joined, invoice_of, open_group_buy
from tests.support import eventually

Span = dict[str, Any]


def spans_of(platform: Platform, trace_id: str) -> list[Span]:
    trace_dir = platform.settings.trace_dir
    assert trace_dir is not None
    spans = []
    for path in Path(trace_dir).glob("*.jsonl"):
        for line in path.read_text().splitlines():
            span = json.loads(line)
            if span["traceId"] == trace_id:
                spans.append(span)
    return spans


def wait_for_spans(
    platform: Platform, trace_id: str, until: Callable[[list[Span]], bool], timeout: float = 20
) -> list[Span]:
    seen: list[Span] = []

    def spans() -> tuple[list[Span]] | None:
        seen[:] = spans_of(platform, trace_id)
        return (list(seen),) if until(seen) else None

    [found] = eventually(
        spans, timeout, every=0.2, what=lambda: str(sorted((s["service"], s["name"]) for s in seen))
    )
    return found


def traceparent() -> tuple[str, str, dict[str, str]]:
    """A caller's trace context, as a browser or gateway in front of Laku would send it."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, span_id, {"traceparent": f"00-{trace_id}-{span_id}-01"}


def servers(spans: list[Span]) -> set[str]:
    return {span["service"] for span in spans if span["kind"] == "SERVER"}


def ancestors(span: Span, by_id: dict[str, Span]) -> list[Span]:
    chain = []
    while span["parentSpanId"] in by_id:
        span = by_id[span["parentSpanId"]]
        chain.append(span)
    return chain


def test_one_join_is_one_trace_across_services_and_the_xendit_sandbox(platform: Platform) -> None:
    catalog = create_seed_catalog(platform)
    session = open_group_buy(platform, catalog, target_moq=10)
    buyer = platform.new_buyer()
    trace_id, caller_span, headers = traceparent()
    response = platform.client("group-buying").post(
        f"/api/group-buying/{session['id']}/join",
        json={"variantId": catalog.variants["M"], "quantity": 1},
        headers={**buyer.headers, **headers},
    )
    joined = Joined(buyer, created(response)["participant"])

    expected = {"group-buying", "warehouse", "payment", "xendit-sandbox"}

    def whole(spans: list[Span]) -> bool:
        """Every hop there, and every span's parent too: the join's notice goes on in its
        trace through the outbox, and each process exports its spans when it will."""
        ids = {span["spanId"] for span in spans} | {caller_span}
        return expected <= servers(spans) and all(s["parentSpanId"] in ids for s in spans)

    spans = wait_for_spans(platform, trace_id, whole)
    by_id = {span["spanId"]: span for span in spans}
    # One tree: the join's server span is the child of the caller's, every other span below it.
    [root] = [span for span in spans if span["parentSpanId"] == caller_span]
    assert (root["service"], root["kind"], root["name"]) == (
        "group-buying",
        "SERVER",
        "POST /api/group-buying/{session_ref}/join",
    )
    for span in spans:
        assert span is root or root in ancestors(span, by_id), span
    # Each hop is a client span in the caller and a server span in the callee, parent and child.
    for callee in ("warehouse", "payment", "xendit-sandbox"):
        entered = [s for s in spans if s["service"] == callee and s["kind"] == "SERVER"]
        assert entered, callee
        for server in entered:
            client = by_id[server["parentSpanId"]]
            assert client["kind"] == "CLIENT"
            assert client["service"] != callee
    [invoice_call] = [
        s for s in spans if s["service"] == "xendit-sandbox" and s["kind"] == "SERVER"
    ]
    assert by_id[invoice_call["parentSpanId"]]["service"] == "payment"

    # Log lines written while serving the join name its trace.
    log = (platform.supervisor.log_dir / "group-buying.log").read_text().splitlines()
    traced = [json.loads(line) for line in log if trace_id in line]
    assert any(r.get("event") == "request" and r["path"].endswith("/join") for r in traced)
    assert all(r["trace_id"] == trace_id for r in traced)

    # Paying: the sandbox's webhook reaches payment in the pay call's trace, and payment's
    # outbox delivery of the event to group-buying continues that trace.
    pay_trace, _, pay_headers = traceparent()
    paid = platform.client("xendit-sandbox").post(
        f"/sandbox/invoices/{invoice_of(platform, joined)['id']}/pay", headers=pay_headers
    )
    assert paid.status_code == 200, paid.text

    def delivered_through_outbox(spans: list[Span]) -> bool:
        by_id = {span["spanId"]: span for span in spans}
        return any(
            span["service"] == "group-buying"
            and span["kind"] == "SERVER"
            and any(
                a["service"] == "payment" and a["name"].startswith("outbox ")
                for a in ancestors(span, by_id)
            )
            for span in spans
        )

    spans = wait_for_spans(platform, pay_trace, delivered_through_outbox)
    assert {"xendit-sandbox", "payment", "group-buying"} <= servers(spans)
    [relay] = [s for s in spans if s["name"] == "outbox report_payment_event"]
    assert relay["kind"] == "CONSUMER"
