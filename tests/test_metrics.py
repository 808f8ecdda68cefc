"""`/metrics` on every service, read after real traffic: requests by route template, the pool,
the outbox, and the business figures of group-buying, warehouse and payment."""

import json
import uuid

from prometheus_client.parser import text_string_to_metric_families

from laku.core.services import SERVICES
from laku.testing.catalog import create_seed_catalog
from laku.testing.platform import Platform
from tests.group_buys import close_group_buy, end_now, join_group_buy, open_group_buy
from tests.support import eventually

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
JOIN_ROUTE = "/api/group-buying/{session_ref}/join"


def scrape(platform: Platform, service: str) -> Samples:
    response = platform.client(service).get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_every_service_serves_its_kernel_metrics(platform: Platform) -> None:
    for service in SERVICES:
        platform.client(service).get("/api/this-route-does-not-exist")
        samples = scrape(platform, service)
        names = {name for name, _ in samples}
        assert {
            "laku_http_requests_total",
            "laku_http_request_duration_seconds_bucket",
            "laku_db_pool_in_use",
            "laku_db_pool_idle",
            "laku_db_pool_waiting",
        } <= names, service
        # An unknown path is counted under one label, not under its own.
        assert value(
            samples, "laku_http_requests_total", method="GET", route="unmatched", status="404"
        ), service
        assert all(
            "/api/this-route-does-not-exist" not in dict(labels).values() for _, labels in samples
        )
        assert value(samples, "laku_db_pool_waiting") == 0
        if service in ("group-buying", "payment", "warehouse", "wallet", "order"):
            assert value(samples, "laku_outbox_pending") >= 0
            assert ("laku_outbox_oldest_pending_age_seconds", frozenset()) in samples


def test_the_web_counts_its_pages_by_route(platform: Platform) -> None:
    web = platform.client("web")
    assert web.get("/").status_code == 200
    samples = scrape(platform, "web")
    assert value(samples, "laku_http_requests_total", method="GET", route="/", status="200") >= 1
    assert value(samples, "laku_http_request_duration_seconds_count", method="GET", route="/")


def test_joins_payments_reservations_and_a_close_show_in_the_metrics(platform: Platform) -> None:
    before = {s: scrape(platform, s) for s in ("group-buying", "payment", "warehouse")}
    catalog = create_seed_catalog(platform, reorder_threshold=0)
    session = open_group_buy(platform, catalog, target_moq=2)
    joined = [
        join_group_buy(platform, session, catalog.variants["S"], 1, pay=True) for _ in range(2)
    ]
    paid = sum(j.participant["totalPrice"] for j in joined)

    group_buying = scrape(platform, "group-buying")

    def grew(name: str, now: Samples, was: Samples, **labels: str) -> float:
        return value(now, name, **labels) - value(was, name, **labels)

    gb_before = before["group-buying"]
    join = {"method": "POST", "route": JOIN_ROUTE}
    assert grew("laku_http_requests_total", group_buying, gb_before, **join, status="201") == 2
    assert grew("laku_http_request_duration_seconds_count", group_buying, gb_before, **join) == 2
    assert grew("laku_group_buying_participants", group_buying, gb_before, status="paid") == 2
    assert grew("laku_group_buying_joined_quantity", group_buying, gb_before, status="paid") == 2

    warehouse = scrape(platform, "warehouse")
    wh_before = before["warehouse"]
    assert grew("laku_warehouse_reservations", warehouse, wh_before, status="reserved") == 2

    payment = scrape(platform, "payment")
    pay_before = before["payment"]
    assert grew("laku_payments", payment, pay_before, status="paid") == 2
    assert grew("laku_payment_escrow_held_rupiah", payment, pay_before) == paid

    end_now(platform, session["id"])
    assert close_group_buy(platform, session["id"])["status"] == "success"
    after = scrape(platform, "group-buying")
    assert grew("laku_group_buying_closes_total", after, gb_before, outcome="success") == 1
    assert grew("laku_group_buying_close_duration_seconds_count", after, gb_before) == 1
    assert value(after, "laku_group_buying_close_duration_seconds_sum") > 0

    # Both paid more than the 100% tier: each gets the difference back, through the outbox.
    eventually(
        lambda: (
            grew(
                "laku_payment_refunds", scrape(platform, "payment"), pay_before, status="succeeded"
            )
            == 2
        )
    )
    outbox = scrape(platform, "group-buying")
    assert value(outbox, "laku_outbox_pending") >= 0


def test_a_dead_letter_is_counted_by_kind(platform: Platform) -> None:
    """An outbox row refused for good (expiring a payment payment-service does not know) is
    counted among the dead letters of its kind, as the table holds them."""
    before = scrape(platform, "group-buying")
    payload = json.dumps({"paymentId": str(uuid.uuid4())})
    [(row_id,)] = platform.sql(
        "INSERT INTO group_buying.outbox (kind, payload) VALUES ('expire_payment', $1::jsonb) "
        "RETURNING id",
        payload,
    )

    def dead_lettered() -> bool:
        [(at,)] = platform.sql(
            "SELECT dead_lettered_at FROM group_buying.outbox WHERE id = $1", row_id
        )
        return at is not None

    eventually(dead_lettered, timeout=30.0)
    after = scrape(platform, "group-buying")
    dead = "laku_outbox_dead_letters"
    assert (
        value(after, dead, kind="expire_payment") == value(before, dead, kind="expire_payment") + 1
    )
    [(in_table,)] = platform.sql(
        "SELECT count(*) FROM group_buying.outbox "
        "WHERE kind = 'expire_payment' AND dead_lettered_at IS NOT NULL"
    )
    assert value(after, dead, kind="expire_payment") == in_table
