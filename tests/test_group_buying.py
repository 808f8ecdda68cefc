"""group-buying-service: sessions, tier prices, the join saga and payment events (seed steps 2-4).

Everything runs against the real processes: warehouse reserves, payment-service creates the
escrow payment and its invoice in the Xendit sandbox, the sandbox's payment sends the real webhook.
"""

import asyncio
import re
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from laku.group_buying.rules import (
    SessionStatus,
    Tier,
    TierPrices,
    fill_basis_points,
    status_after_payment,
    tier_for,
    unit_price,
)
from laku.testing.catalog import create_seed_catalog, created
from laku.testing.platform import Account, Platform
from tests.group_buys import session_of
from tests.joins import (
    all_participants,
    available_stock,
    invoice_id_of,
    iso_utc,
    join_created,
    join_request,
    open_seed_session,
    paid_through,
    participant_of,
    pay_invoice,
    payment_by_id,
    session_body,
)
from tests.support import (
    admin_headers,
    assert_problem,
    eventually,
    outbox_marks,
    outboxes_done,
    snapshot,
)

ADJUSTMENT = {"S": 0, "M": 5000, "L": 10000}
SCHEMAS = ("group_buying", "warehouse", "payment")


# --- the tier rule, as a pure function ------------------------------------------------------


@pytest.mark.parametrize(
    ("paid", "moq", "tier"),
    [
        (0, 100, Tier.T25),
        (49, 100, Tier.T25),
        (50, 100, Tier.T50),
        (74, 100, Tier.T50),
        (75, 100, Tier.T75),
        (99, 100, Tier.T75),
        (100, 100, Tier.T100),
        (250, 100, Tier.T100),
        (1, 3, Tier.T25),  # 33%
        (2, 3, Tier.T50),  # 66.7%: not yet 75%
        (3, 4, Tier.T75),
        (1, 2, Tier.T50),
        (1, 1, Tier.T100),
    ],
)
def test_tier_is_the_fill_before_the_join(paid: int, moq: int, tier: Tier) -> None:
    assert tier_for(paid, moq) is tier


@given(st.integers(0, 10**6), st.integers(1, 10**6))
def test_tier_matches_the_exact_fill(paid: int, moq: int) -> None:
    expected = next(t for t in (100, 75, 50, 25) if paid * 100 >= t * moq or t == 25)
    assert tier_for(paid, moq) == expected
    assert tier_for(paid + 1, moq) >= tier_for(paid, moq)  # more paid never costs more


def test_fill_prices_and_status() -> None:
    assert fill_basis_points(5, 100) == 500
    assert fill_basis_points(2, 3) == 6666  # rounded down, never shows a tier early
    assert fill_basis_points(150, 100) == 15000
    prices = TierPrices(95000, 85000, 75000, 65000)
    assert not prices.rises()
    assert TierPrices(95000, 96000, 75000, 65000).rises()
    assert unit_price(prices, 0, 100) == 95000
    assert unit_price(prices, 75, 100) == 75000
    forming, active, reached = (
        SessionStatus.FORMING,
        SessionStatus.ACTIVE,
        SessionStatus.MOQ_REACHED,
    )
    assert status_after_payment(forming, 0, 4) is forming
    assert status_after_payment(forming, 1, 4) is active
    assert status_after_payment(active, 3, 4) is active
    assert status_after_payment(active, 4, 4) is reached
    assert status_after_payment(forming, 5, 4) is reached
    cancelled = SessionStatus.CANCELLED
    assert status_after_payment(cancelled, 5, 4) is cancelled


# --- helpers --------------------------------------------------------------------------------


def _service_headers(platform: Platform) -> dict[str, str]:
    return platform.service_headers("payment")


def _report(
    platform: Platform, headers: dict[str, str], joined: dict[str, Any], status: str
) -> httpx.Response:
    participant = joined["participant"]
    return platform.client("group-buying").post(
        "/api/group-buying/payment-events",
        json={
            "reference": participant["reservationReference"],
            "paymentId": participant["paymentId"],
            "status": status,
            "occurredAt": iso_utc(datetime.now(UTC)),
        },
        headers={**headers, "Idempotency-Key": uuid.uuid4().hex},
    )


def _reservation_moves(platform: Platform, variant_id: str) -> list[dict[str, Any]]:
    moves: list[dict[str, Any]] = []
    while True:
        page = platform.client("warehouse").get(
            f"/api/inventory/{variant_id}/movements",
            params={"limit": 100, "offset": len(moves)},
            headers=admin_headers(platform),
        )
        assert page.status_code == 200, page.text
        moves += page.json()
        if len(page.json()) < 100:
            return [m for m in moves if m["kind"] in ("reserve", "release")]


# --- seed steps 2-4 -------------------------------------------------------------------------


def test_seed_steps_2_to_4(platform: Platform) -> None:
    catalog = create_seed_catalog(platform)
    session = open_seed_session(platform, catalog)
    assert re.fullmatch(r"GB-[A-Z2-9]{8}", session["sessionCode"])
    assert session["status"] == "forming"
    assert (session["paidQuantity"], session["fillBasisPoints"], session["currentTier"]) == (
        0,
        0,
        25,
    )
    assert session["buyerCount"] == 0
    assert session["groupPrice"] == session["currentUnitPrice"] == 95000
    # Every variant at the tier price; the catalog's adjustments are shown, not added.
    prices = {v["variantId"]: (v["unitPrice"], v["priceAdjustment"]) for v in session["variants"]}
    assert prices == {catalog.variants[s]: (95000, ADJUSTMENT[s]) for s in ("S", "M", "L")}
    assert session_of(platform, session["sessionCode"])["id"] == session["id"]

    buyer = platform.new_buyer()
    joined = created(
        join_request(
            platform,
            buyer,
            session["id"],
            catalog.variants["M"],
            5,
            userId=buyer.id,
            unitPrice=95000,  # the seed's join body, word for word: priceTier25 for Medium too
            totalPrice=475000,
        )
    )
    participant = joined["participant"]
    assert participant["status"] == "pending_payment"
    assert (participant["unitPrice"], participant["totalPrice"]) == (95000, 475000)
    assert participant["reservationReference"] == f"participant:{participant['id']}"
    assert joined["paymentUrl"] == participant["paymentUrl"]
    assert joined["paymentUrl"].startswith(platform.url("xendit-sandbox"))
    assert available_stock(platform, catalog) == {"S": 8, "M": 3, "L": 8}
    payment = payment_by_id(platform, buyer, participant["paymentId"])
    assert payment["status"] == "pending"
    assert payment["reference"] == participant["reservationReference"]
    assert payment["amount"] == 475000

    paid_through(platform, buyer, session, joined)
    assert payment_by_id(platform, buyer, participant["paymentId"])["status"] == "paid"
    after = session_of(platform, session["id"])
    assert after["status"] == "active"
    assert (after["paidQuantity"], after["fillBasisPoints"], after["currentTier"]) == (5, 500, 25)
    assert after["buyerCount"] == 1
    mine = platform.client("group-buying").get(
        "/api/group-buying/participations/me", headers=buyer.headers
    )
    [participation] = mine.json()["items"]
    assert participation["sessionCode"] == session["sessionCode"]
    assert participation["status"] == "paid"
    assert participation["paymentUrl"] == joined["paymentUrl"]
    assert participation["variantName"] == "Medium"
    assert available_stock(platform, catalog) == {
        "S": 8,
        "M": 3,
        "L": 8,
    }  # paid stock stays reserved


def test_tiers_and_status_follow_the_paid_fill(platform: Platform) -> None:
    """MOQ 4: each join is priced at the fill before it, 2 → 50%, 3 → 75%, 4 → MOQ reached."""
    catalog = create_seed_catalog(platform)
    session = open_seed_session(platform, catalog, target_moq=4)
    small = catalog.variants["S"]
    expected = [(2, 95000, 5000, 50, "active"), (1, 85000, 7500, 75, "active")]
    expected.append((1, 75000, 10000, 100, "moq_reached"))
    for buyers, (quantity, price, fill, tier, status) in enumerate(expected, start=1):
        buyer = platform.new_buyer()
        joined = join_created(platform, buyer, session, small, quantity)
        assert joined["participant"]["unitPrice"] == price
        paid_through(platform, buyer, session, joined)
        now = session_of(platform, session["id"])
        assert (now["fillBasisPoints"], now["currentTier"], now["status"]) == (fill, tier, status)
        assert now["buyerCount"] == buyers
    assert now["currentUnitPrice"] == 65000
    assert now["quantityToMoq"] == 0
    # Joins stay open past the MOQ, at the 100% tier.
    late = join_created(platform, platform.new_buyer(), session, catalog.variants["L"], 1)
    assert late["participant"]["unitPrice"] == 65000  # Large too: no adjustment added
    # A buyer's second paid join counts the buyer once (the late join is unpaid).
    again = join_created(platform, buyer, session, small, 1)
    paid_through(platform, buyer, session, again)
    assert session_of(platform, session["id"])["buyerCount"] == len(expected)


def test_concurrent_payments_are_all_counted(platform: Platform) -> None:
    """Ten PAID events at once: the session row lock keeps every one."""
    catalog = create_seed_catalog(platform)
    session = open_seed_session(platform, catalog, target_moq=10)
    joins = [
        join_created(platform, platform.new_buyer(), session, catalog.variants[size], 1)
        for size in ("S", "M", "L", "S", "M", "L", "S", "M", "L", "S")
    ]
    service = _service_headers(platform)

    async def report_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=platform.url("group-buying"), timeout=30) as http:
            return await asyncio.gather(
                *(
                    http.post(
                        "/api/group-buying/payment-events",
                        json={
                            "reference": j["participant"]["reservationReference"],
                            "paymentId": j["participant"]["paymentId"],
                            "status": "paid",
                            "occurredAt": iso_utc(datetime.now(UTC)),
                        },
                        headers={**service, "Idempotency-Key": uuid.uuid4().hex},
                    )
                    for j in joins
                )
            )

    responses = asyncio.run(report_all())
    assert [r.json()["outcome"] for r in responses] == ["applied"] * 10
    after = session_of(platform, session["id"])
    assert (after["paidQuantity"], after["status"], after["currentTier"]) == (
        10,
        "moq_reached",
        100,
    )


# --- sessions -------------------------------------------------------------------------------


def test_session_terms_are_checked(platform: Platform) -> None:
    catalog = create_seed_catalog(platform, bundle={}, stock={})
    other = create_seed_catalog(platform, bundle={}, stock={})
    gb = platform.client("group-buying")
    before = snapshot(platform, "group_buying")

    def refused(status: int, code: str, **changes: Any) -> None:
        body = {**session_body(catalog), **changes}
        assert_problem(
            gb.post("/api/group-buying", json=body, headers=admin_headers(platform)), status, code
        )

    refused(422, "tiers_rise", priceTier50=96000)
    refused(422, "tiers_rise", priceTier75=65000, priceTier100=70000)
    refused(422, "group_price_mismatch", groupPrice=90000)
    refused(422, "end_time_past", endTime=iso_utc(datetime.now(UTC) - timedelta(minutes=1)))
    refused(422, "completion_before_end", estimatedCompletionDate=iso_utc(datetime.now(UTC)))
    refused(422, "unknown_product", productId=str(uuid.uuid4()))
    refused(422, "factory_mismatch", factoryId=other.factory_id)
    refused(422, "invalid_input", targetMoq=0)
    refused(422, "invalid_input", targetMoq=10.5)
    refused(422, "invalid_input", priceTier25=95000.5)
    refused(422, "invalid_input", priceTier100=0)
    refused(422, "invalid_input", endTime="2030-12-31T23:59:59")  # no time zone
    refused(422, "invalid_input", sessionCode="GB-CHOSEN01")
    assert snapshot(platform, "group_buying") == before

    body = session_body(catalog)
    del body["groupPrice"]  # defaults to priceTier25
    session = created(gb.post("/api/group-buying", json=body, headers=admin_headers(platform)))
    assert session["groupPrice"] == 95000
    assert session["productName"] == "Premium T-Shirt"
    assert session["factoryId"] == catalog.factory_id
    assert session_of(platform, session["sessionCode"].lower())["id"] == session["id"]
    assert_problem(gb.get("/api/group-buying/GB-NOSUCH00"), 404, "session_not_found")
    assert_problem(gb.get(f"/api/group-buying/{uuid.uuid4()}"), 404, "session_not_found")


def test_open_sessions_are_listed_with_their_prices(platform: Platform) -> None:
    catalog = create_seed_catalog(platform, bundle={}, stock={})
    listed = open_seed_session(platform, catalog, ends_in=timedelta(days=400))
    closing = open_seed_session(platform, catalog, ends_in=timedelta(seconds=1))
    cancelled = open_seed_session(platform, catalog, ends_in=timedelta(days=400))
    gb = platform.client("group-buying")
    assert gb.post(
        f"/api/group-buying/{cancelled['id']}/cancel", headers=admin_headers(platform)
    ).is_success
    time.sleep(1.1)

    seen: dict[str, dict[str, Any]] = {}
    offset, total = 0, None
    while total is None or offset < total:
        page = gb.get("/api/group-buying", params={"limit": 100, "offset": offset}).json()
        total, offset = page["total"], offset + 100
        seen |= {item["id"]: item for item in page["items"]}
    assert listed["id"] in seen
    assert closing["id"] not in seen and cancelled["id"] not in seen
    entry = seen[listed["id"]]
    assert entry["joinable"] is True
    assert (entry["paidQuantity"], entry["currentTier"], entry["currentUnitPrice"]) == (
        0,
        25,
        95000,
    )
    by_name = {v["variantName"]: v["unitPrice"] for v in entry["variants"]}
    assert by_name == {"Small": 95000, "Medium": 95000, "Large": 95000}
    closed = session_of(platform, closing["id"])
    assert closed["joinable"] is False
    assert closed["status"] in ("forming", "failed")  # "failed" if the scheduler closed it

    # Asked by status (and factory), ended sessions are listed too: the admin's and a
    # factory's lists.
    ended = gb.get(
        "/api/group-buying",
        params={"status": ["cancelled", "forming"], "factoryId": catalog.factory_id, "limit": 100},
    ).json()
    ids = {item["id"]: item["status"] for item in ended["items"]}
    assert ids[cancelled["id"]] == "cancelled" and ids[listed["id"]] == "forming"
    assert set(ids.values()) <= {"cancelled", "forming"}
    assert ended["total"] == len(ids)
    elsewhere = gb.get(
        "/api/group-buying", params={"status": "cancelled", "factoryId": str(uuid.uuid4())}
    ).json()
    assert elsewhere == {"items": [], "total": 0, "limit": 20, "offset": 0}
    assert_problem(gb.get("/api/group-buying", params={"status": "closed"}), 422)

    counts = gb.get("/api/group-buying/status-counts", headers=admin_headers(platform))
    assert counts.status_code == 200, counts.text
    assert counts.json()["cancelled"] >= 1 and set(counts.json()) == {
        "forming", "active", "moq_reached", "pending_stock", "stock_received", "success",
        "failed", "cancelled",
    }  # fmt: skip
    assert gb.get("/api/group-buying/status-counts").status_code == 401


def test_variant_availability(platform: Platform) -> None:
    catalog = create_seed_catalog(platform, stock={"S": 8, "M": 8})
    session = open_seed_session(platform, catalog)
    join_created(platform, platform.new_buyer(), session, catalog.variants["M"], 5)

    def availability(session_id: str) -> dict[str, dict[str, Any]]:
        response = platform.client("group-buying").get(
            f"/api/group-buying/{session_id}/variant-availability"
        )
        assert response.status_code == 200, response.text
        sizes = {variant_id: size for size, variant_id in catalog.variants.items()}
        return {sizes[v["variantId"]]: v for v in response.json()["variants"]}

    seen = availability(session["sessionCode"])
    summary = {s: (v["availableQuantity"], v["status"], v["canJoin"]) for s, v in seen.items()}
    assert summary == {
        "S": (8, "in_stock", True),
        "M": (3, "low_stock", True),
        "L": (0, "out_of_stock", False),  # never stocked
    }
    assert {s: v["unitPrice"] for s, v in seen.items()} == {"S": 95000, "M": 95000, "L": 95000}
    large = join_request(platform, platform.new_buyer(), session["id"], catalog.variants["L"], 1)
    assert_problem(large, 409, "insufficient_stock")

    cancel = platform.client("group-buying").post(
        f"/api/group-buying/{session['id']}/cancel", headers=admin_headers(platform)
    )
    assert cancel.status_code == 200
    assert not any(v["canJoin"] for v in availability(session["id"]).values())


# --- refused joins change nothing -----------------------------------------------------------


def test_a_different_client_price_is_refused_before_anything_is_reserved(
    platform: Platform,
) -> None:
    catalog = create_seed_catalog(platform)
    session = open_seed_session(platform, catalog)
    buyer = platform.new_buyer()
    before, stock = snapshot(platform, *SCHEMAS), available_stock(platform, catalog)
    medium = catalog.variants["M"]
    for prices in (
        {"unitPrice": 100000, "totalPrice": 500000},  # the tier price plus M's adjustment
        {"unitPrice": 95000, "totalPrice": 500000},
        {"totalPrice": 475001},
        {"unitPrice": 94999},
    ):
        refused = join_request(platform, buyer, session["id"], medium, 5, **prices)
        assert "95.000" in assert_problem(refused, 409, "price_mismatch")["detail"]
    assert snapshot(platform, *SCHEMAS) == before
    assert available_stock(platform, catalog) == stock
    # The server's price is accepted whether sent in full, in part or not at all.
    assert (
        join_request(platform, buyer, session["id"], medium, 1, unitPrice=95000).status_code == 201
    )


def test_a_join_retried_with_its_idempotency_key_joins_once(platform: Platform) -> None:
    catalog = create_seed_catalog(platform)
    session = open_seed_session(platform, catalog)
    buyer = platform.new_buyer()
    path = f"/api/group-buying/{session['id']}/join"
    body = {"quantity": 2, "variantId": catalog.variants["S"]}
    headers = {**buyer.headers, "Idempotency-Key": uuid.uuid4().hex}
    first, retried = (
        platform.client("group-buying").post(path, json=body, headers=headers) for _ in range(2)
    )
    assert first.status_code == retried.status_code == 201, retried.text
    assert retried.json() == first.json()
    assert len(all_participants(platform, session["id"])) == 1
    assert available_stock(platform, catalog)["S"] == 6


def test_refused_joins_change_nothing(platform: Platform) -> None:
    catalog = create_seed_catalog(platform)
    other = create_seed_catalog(platform, bundle={}, stock={})
    session = open_seed_session(platform, catalog)
    expiring = open_seed_session(platform, catalog, ends_in=timedelta(seconds=1))
    cancelled = open_seed_session(platform, catalog)
    gb = platform.client("group-buying")
    assert gb.post(
        f"/api/group-buying/{cancelled['id']}/cancel", headers=admin_headers(platform)
    ).is_success
    buyer, someone_else = platform.new_buyer(), platform.new_buyer()
    small = catalog.variants["S"]
    time.sleep(1.1)  # `expiring` is past its endTime
    # Closed now (it fails: nobody joined), so group-buying's scheduler has nothing to change
    # while the snapshots are compared.
    assert gb.post("/api/group-buying/process-expired", headers=admin_headers(platform)).is_success
    before = snapshot(platform, *SCHEMAS)

    assert_problem(join_request(platform, buyer, cancelled["id"], small, 1), 409, "session_closed")
    assert_problem(join_request(platform, buyer, expiring["id"], small, 1), 409, "session_closed")
    assert_problem(join_request(platform, buyer, "GB-NOSUCH00", small, 1), 404, "session_not_found")
    for foreign in (other.variants["S"], str(uuid.uuid4())):
        assert_problem(
            join_request(platform, buyer, session["id"], foreign, 1), 422, "unknown_variant"
        )
    for quantity in (0, -1, 1.5, "2", None, 10_001):
        assert_problem(
            join_request(platform, buyer, session["id"], small, quantity), 422, "invalid_input"
        )
    assert_problem(
        join_request(platform, buyer, session["id"], small, 1, userId=someone_else.id),
        403,
        "user_mismatch",
    )
    assert_problem(
        join_request(platform, buyer, session["id"], small, 9), 409, "insufficient_stock"
    )
    assert_problem(
        join_request(platform, buyer, session["id"], small, 1, unitPrice=-5), 422, "invalid_input"
    )
    assert snapshot(platform, *SCHEMAS) == before
    assert available_stock(platform, catalog) == {"S": 8, "M": 8, "L": 8}


def test_payment_service_down_releases_the_reservation(platform: Platform) -> None:
    catalog = create_seed_catalog(platform)
    session = open_seed_session(platform, catalog)
    buyer = platform.new_buyer()
    medium = catalog.variants["M"]
    platform.supervisor.stop("payment")
    try:
        refused = join_request(platform, buyer, session["id"], medium, 5)
    finally:
        platform.supervisor.start_one("payment")
        platform.supervisor.wait_ready()
    assert_problem(refused, 503)
    assert available_stock(platform, catalog) == {"S": 8, "M": 8, "L": 8}
    # Kept, cancelled: money paid for it would be found and given back.
    [failed] = all_participants(platform, session["id"])
    assert (failed["status"], failed["cancelReason"]) == ("cancelled", "join_failed")
    # Its payment, never made, never will be once payment-service hears of it again.
    assert eventually(
        lambda: platform.sql(
            "SELECT 1 FROM payment.voided_references WHERE reference = $1",
            failed["reservationReference"],
        )
    )
    moves = _reservation_moves(platform, medium)
    assert sorted(m["kind"] for m in moves) == ["release", "reserve"]
    assert len({m["reference"] for m in moves}) == 1
    assert moves[0]["reference"].startswith("participant:")
    # Once payment-service is back the same join goes through.
    assert join_request(platform, buyer, session["id"], medium, 5).status_code == 201


# --- payment events -------------------------------------------------------------------------


def test_repeated_and_late_payment_events_change_nothing_twice(platform: Platform) -> None:
    marks = outbox_marks(platform)
    catalog = create_seed_catalog(platform)
    session = open_seed_session(platform, catalog, target_moq=10)
    buyer = platform.new_buyer()
    joined = join_created(platform, buyer, session, catalog.variants["L"], 3)
    invoice_id = pay_invoice(platform, buyer, joined)
    participant_id = joined["participant"]["id"]
    assert eventually(lambda: participant_of(platform, session["id"], participant_id)["paidAt"])
    paid = participant_of(platform, session["id"], participant_id)
    sandbox = platform.client("xendit-sandbox")
    for _ in range(5):  # Xendit delivers the same PAID webhook again
        assert sandbox.post(f"/sandbox/invoices/{invoice_id}/resend-webhook").status_code == 200

    def deliveries_done() -> bool:
        attempts = sandbox.get("/sandbox/webhooks", params={"invoiceId": invoice_id}).json()
        return len({a["delivery"] for a in attempts if a["delivered"]}) >= 6

    assert eventually(deliveries_done)
    service = _service_headers(platform)
    for status in ("paid", "paid", "expired", "failed"):
        late = _report(platform, service, joined, status)
        assert late.status_code == 200, late.text
        assert late.json() == {
            "reference": joined["participant"]["reservationReference"],
            "outcome": "ignored",
            "participantStatus": "paid",
        }
    outboxes_done(platform, marks)  # anything wrongly queued by those events has run
    assert participant_of(platform, session["id"], participant_id) == paid
    assert session_of(platform, session["id"])["paidQuantity"] == 3
    assert available_stock(platform, catalog)["L"] == 5  # still reserved for the paid buyer


def test_expired_invoice_cancels_the_participant_and_releases_its_stock(
    platform: Platform,
) -> None:
    catalog = create_seed_catalog(platform)
    session = open_seed_session(platform, catalog)
    buyer = platform.new_buyer()
    joined = join_created(platform, buyer, session, catalog.variants["S"], 2)
    payment = payment_by_id(platform, buyer, joined["participant"]["paymentId"])
    invoice_id = invoice_id_of(platform, payment["paymentCode"])
    assert (
        platform.client("xendit-sandbox").post(f"/sandbox/invoices/{invoice_id}/expire").is_success
    )
    participant_id = joined["participant"]["id"]
    cancelled = eventually(
        lambda: (
            (p := participant_of(platform, session["id"], participant_id))["status"] == "cancelled"
            and p
        )
    )
    assert cancelled and cancelled["cancelReason"] == "payment_expired"
    assert eventually(lambda: available_stock(platform, catalog)["S"] == 8)
    late_paid = _report(platform, _service_headers(platform), joined, "paid")
    assert late_paid.json()["participantStatus"] == "cancelled"
    assert session_of(platform, session["id"])["paidQuantity"] == 0


def test_unknown_references_are_answered_unknown_and_change_nothing(platform: Platform) -> None:
    service = _service_headers(platform)
    before = snapshot(platform, "group_buying")
    for reference in (f"participant:{uuid.uuid4()}", "participant:not-a-uuid", "order:1"):
        response = platform.client("group-buying").post(
            "/api/group-buying/payment-events",
            json={
                "reference": reference,
                "paymentId": str(uuid.uuid4()),
                "status": "paid",
                "occurredAt": iso_utc(datetime.now(UTC)),
            },
            headers={**service, "Idempotency-Key": uuid.uuid4().hex},
        )
        assert response.status_code == 200, response.text
        assert response.json()["outcome"] == "unknown"  # payment-service gives money back
    assert snapshot(platform, "group_buying") == before


# --- concurrency ----------------------------------------------------------------------------


async def _new_buyers(platform: Platform, count: int) -> list[Account]:
    # Few at a time: auth holds a database connection while it hashes a password.
    limit = asyncio.Semaphore(8)

    async def one(http: httpx.AsyncClient) -> Account:
        email, password = f"crowd-{uuid.uuid4().hex[:12]}@laku.id", "crowd-password"
        async with limit:
            registered = await http.post(
                "/api/auth/register", json={"email": email, "password": password, "name": "Crowd"}
            )
            assert registered.status_code == 201, registered.text
            login = await http.post("/api/auth/login", json={"email": email, "password": password})
            assert login.status_code == 200, login.text
        return Account(registered.json()["id"], email, login.json()["accessToken"])

    async with httpx.AsyncClient(base_url=platform.url("auth"), timeout=60) as http:
        return await asyncio.gather(*(one(http) for _ in range(count)))


async def _join_all(
    platform: Platform, buyers: list[Account], session_id: str, variant_id: str
) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(buyers), max_keepalive_connections=len(buyers))
    async with httpx.AsyncClient(
        base_url=platform.url("group-buying"), timeout=60, limits=limits
    ) as http:
        return await asyncio.gather(
            *(
                http.post(
                    f"/api/group-buying/{session_id}/join",
                    json={"quantity": 1, "variantId": variant_id},
                    headers=buyer.headers,
                )
                for buyer in buyers
            )
        )


def test_300_buyers_race_for_100_units(platform: Platform) -> None:
    catalog = create_seed_catalog(
        platform, stock={"S": 100}, max_stock_level=100, reorder_threshold=4
    )
    session = open_seed_session(platform, catalog, target_moq=1000)
    small = catalog.variants["S"]
    buyers = asyncio.run(_new_buyers(platform, 300))
    payments_before = int(snapshot(platform, "payment")["payment"]["payments"].split(":")[0])

    responses = asyncio.run(_join_all(platform, buyers, session["id"], small))

    statuses = [r.status_code for r in responses]
    assert statuses.count(201) == 100, {s: statuses.count(s) for s in set(statuses)}
    for refused in (r for r in responses if r.status_code != 201):
        assert_problem(refused, 409, "insufficient_stock")
    assert available_stock(platform, catalog) == {"S": 0}
    joined = [r.json()["participant"] for r in responses if r.status_code == 201]
    pending = all_participants(platform, session["id"], "pending_payment")
    assert {p["id"] for p in pending} == {p["id"] for p in joined}
    assert len(all_participants(platform, session["id"])) == 100
    assert len({p["paymentId"] for p in pending}) == 100
    payments_after = int(snapshot(platform, "payment")["payment"]["payments"].split(":")[0])
    assert payments_after - payments_before == 100
    references = {p["reservationReference"] for p in pending}
    moves = _reservation_moves(platform, small)
    assert [m["kind"] for m in moves] == ["reserve"] * 100
    assert {m["reference"] for m in moves} == references


# --- cancelling and authorisation -----------------------------------------------------------


def test_admin_cancel_expires_invoices_refunds_the_paid_and_releases_stock(
    platform: Platform,
) -> None:
    marks = outbox_marks(platform)
    catalog = create_seed_catalog(platform)
    session = open_seed_session(platform, catalog)
    unpaid_buyer, paid_buyer = platform.new_buyer(), platform.new_buyer()
    unpaid = join_created(platform, unpaid_buyer, session, catalog.variants["S"], 2)
    paid = join_created(platform, paid_buyer, session, catalog.variants["M"], 3)
    paid_through(platform, paid_buyer, session, paid)
    assert available_stock(platform, catalog) == {"S": 6, "M": 5, "L": 8}

    gb = platform.client("group-buying")
    cancel = gb.post(f"/api/group-buying/{session['id']}/cancel", headers=admin_headers(platform))
    assert cancel.status_code == 200, cancel.text
    assert cancel.json()["status"] == "cancelled"
    assert cancel.json()["joinable"] is False

    assert eventually(lambda: available_stock(platform, catalog) == {"S": 8, "M": 8, "L": 8})
    unpaid_payment = unpaid["participant"]["paymentId"]
    assert eventually(
        lambda: payment_by_id(platform, unpaid_buyer, unpaid_payment)["status"] == "expired"
    )
    wallet = platform.client("wallet")
    assert eventually(
        lambda: (
            wallet.get("/api/wallets/me", headers=paid_buyer.headers).json()["balance"] == 3 * 95000
        )  # paid in full back: 3 M at 95,000
    )
    [credit] = wallet.get("/api/wallets/me/transactions", headers=paid_buyer.headers).json()[
        "items"
    ]
    assert (credit["reason"], credit["reference"]) == (
        "session_cancelled_refund",
        f"session:{session['id']}:participant:{paid['participant']['id']}",
    )
    paid_payment = payment_by_id(platform, paid_buyer, paid["participant"]["paymentId"])
    assert (paid_payment["status"], paid_payment["escrowStatus"]) == ("refunded", "refunded")
    by_id = {p["id"]: p for p in all_participants(platform, session["id"])}
    statuses = {
        joined["participant"]["id"]: (
            by_id[joined["participant"]["id"]]["status"],
            by_id[joined["participant"]["id"]]["cancelReason"],
        )
        for joined in (unpaid, paid)
    }
    assert statuses == {
        unpaid["participant"]["id"]: ("cancelled", "session_cancelled"),
        paid["participant"]["id"]: ("refunded", "session_cancelled"),
    }
    assert by_id[unpaid["participant"]["id"]]["paidAt"] is None

    outboxes_done(platform, marks)  # the outboxes are done before comparing
    before = snapshot(platform, *SCHEMAS)
    again = gb.post(f"/api/group-buying/{session['id']}/cancel", headers=admin_headers(platform))
    assert again.status_code == 200
    assert again.json()["cancelledAt"] == cancel.json()["cancelledAt"]
    assert_problem(
        join_request(platform, unpaid_buyer, session["id"], catalog.variants["S"], 1),
        409,
        "session_closed",
    )
    assert snapshot(platform, *SCHEMAS) == before


def test_authorisation(platform: Platform) -> None:
    catalog = create_seed_catalog(platform)
    session = open_seed_session(platform, catalog)
    gb = platform.client("group-buying")
    owner, other = platform.new_buyer(), platform.new_buyer()
    joined = join_created(platform, owner, session, catalog.variants["S"], 1)
    body = session_body(catalog)
    event = {
        "reference": joined["participant"]["reservationReference"],
        "paymentId": joined["participant"]["paymentId"],
        "status": "paid",
        "occurredAt": iso_utc(datetime.now(UTC)),
    }
    sid = session["id"]
    join_body = {"quantity": 1, "variantId": catalog.variants["S"]}
    calls = [
        ("post", "/api/group-buying", body),
        ("post", f"/api/group-buying/{sid}/join", join_body),
        ("post", f"/api/group-buying/{sid}/cancel", None),
        ("get", f"/api/group-buying/{sid}/participants", None),
        ("get", "/api/group-buying/participations/me", None),
        ("post", "/api/group-buying/payment-events", event),
    ]
    for method, path, json in calls:
        assert_problem(gb.request(method, path, json=json), 401, "unauthorized")
    for method, path, json in [calls[0], calls[2], calls[3], calls[5]]:
        assert_problem(gb.request(method, path, json=json, headers=other.headers), 403, "forbidden")
    admin = admin_headers(platform)  # only payment-service reports payments; only buyers join
    assert_problem(gb.post(calls[5][1], json=event, headers=admin), 403, "forbidden")
    assert_problem(gb.post(calls[1][1], json=join_body, headers=admin), 403, "forbidden")

    mine = gb.get("/api/group-buying/participations/me", headers=owner.headers).json()
    theirs = gb.get("/api/group-buying/participations/me", headers=other.headers).json()
    assert [p["id"] for p in mine["items"]] == [joined["participant"]["id"]]
    assert theirs == {"items": [], "total": 0, "limit": 50, "offset": 0}
    # The public reads need no token.
    assert gb.get(f"/api/group-buying/{sid}").status_code == 200
    assert gb.get(f"/api/group-buying/{sid}/variant-availability").status_code == 200
    assert participant_of(platform, sid, joined["participant"]["id"])["status"] == "pending_payment"
