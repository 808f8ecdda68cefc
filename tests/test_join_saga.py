"""The join saga under timing and failure (design 7 "Join", design 15): a join invoices exactly
the price it records, and no timeout or crash strands stock or money.

Each scenario holds a lock from the test (an asyncpg connection) to stop a real process at a
chosen point: the session row (the join has quoted and reserved, and waits to record its
participant), or a payment-service table (its payment creation, or its giving up, waits). Joins
are sent in the background; processes are killed for real with SIGKILL. Holds are made to lapse
by moving their expiry into the past, the test standing in for the clock; the sweepers run
every second on the test platform (tests/conftest.py).
"""

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx

from laku.testing.catalog import SeedCatalog, create_seed_catalog
from laku.testing.database import plain_url, run
from laku.testing.platform import Account, Platform
from tests.group_buys import close_group_buy, end_now, open_group_buy, participants_of, stock_of
from tests.support import (
    admin_headers,
    assert_problem,
    balance,
    eventually,
    eventually_async,
    outbox_marks,
    outboxes_done,
)

# The seed's tiers (laku.testing.catalog.TIERS): moving the paid fill to 50% makes 85,000 the
# price.
MOQ = 10


# --- helpers --------------------------------------------------------------------------------


async def _connect(platform: Platform) -> asyncpg.Connection:
    return await asyncpg.connect(plain_url(platform.database_url))


@asynccontextmanager
async def _locked(platform: Platform, *statements: str, args: tuple = ()) -> AsyncIterator[Any]:
    """A transaction of the test's own that holds the locks `statements` take until it ends
    (committed when the block ends normally, so changes made in it count)."""
    conn = await _connect(platform)
    transaction = conn.transaction()
    await transaction.start()
    try:
        for statement in statements:
            await conn.execute(statement, *args)
        yield conn
    except BaseException:
        await transaction.rollback()
        raise
    else:
        await transaction.commit()
    finally:
        await conn.close()


def _lock_session(session_id: str) -> tuple[str, tuple]:
    return (
        "SELECT 1 FROM group_buying.group_buying_sessions WHERE id = $1 FOR UPDATE",
        (uuid.UUID(session_id),),
    )


async def _poll(platform: Platform, query: str, *args: Any, within: float = 30.0) -> Any:
    """The first row `query` returns, polled (another connection) until there is one."""
    conn = await _connect(platform)
    try:
        return await eventually_async(
            lambda: conn.fetchrow(query, *args), within, what=f"a row from {query} {args}"
        )
    finally:
        await conn.close()


async def _reserved_for(platform: Platform, session_id: str) -> asyncpg.Record:
    """The join's reservation, once warehouse-service has written it."""
    return await _poll(
        platform,
        "SELECT reference, status, expires_at FROM warehouse.reservations "
        "WHERE group_reference = $1",
        f"session:{session_id}",
    )


def _join_in_background(
    platform: Platform, session_id: str, buyer: Account, body: dict[str, Any]
) -> "asyncio.Task[httpx.Response | httpx.HTTPError]":
    async def join() -> httpx.Response | httpx.HTTPError:
        async with httpx.AsyncClient(base_url=platform.url("group-buying"), timeout=90) as http:
            try:
                return await http.post(
                    f"/api/group-buying/{session_id}/join", json=body, headers=buyer.headers
                )
            except httpx.HTTPError as exc:
                return exc

    return asyncio.create_task(join())


def _participant_id(reference: str) -> uuid.UUID:
    return uuid.UUID(reference.removeprefix("participant:"))


def _participant_row(platform: Platform, reference: str) -> asyncpg.Record | None:
    rows = platform.sql(
        "SELECT status, cancel_reason, unit_price, total_price, paid_at "
        "FROM group_buying.group_participants WHERE reservation_reference = $1",
        reference,
    )
    return rows[0] if rows else None


def _payment_row(platform: Platform, reference: str) -> asyncpg.Record | None:
    rows = platform.sql(
        "SELECT id, payment_code, amount, status, refunded_amount, xendit_invoice_id "
        "FROM payment.payments WHERE reference = $1",
        reference,
    )
    return rows[0] if rows else None


def _reservation_status(platform: Platform, reference: str) -> str | None:
    rows = platform.sql("SELECT status FROM warehouse.reservations WHERE reference = $1", reference)
    return rows[0]["status"] if rows else None


def _sandbox_invoice(platform: Platform, invoice_id: str) -> dict[str, Any]:
    invoices = platform.client("xendit-sandbox").get("/sandbox/invoices").json()
    [invoice] = [i for i in invoices if i["id"] == invoice_id]
    return invoice


def _pay(platform: Platform, invoice_id: str) -> None:
    paid = platform.client("xendit-sandbox").post(f"/sandbox/invoices/{invoice_id}/pay")
    assert paid.status_code == 200, paid.text


def _refunds(platform: Platform, payment_id: uuid.UUID) -> list[tuple[int, str]]:
    rows = platform.sql(
        "SELECT amount, reason FROM payment.refunds WHERE payment_id = $1", payment_id
    )
    return [(row["amount"], row["reason"]) for row in rows]


def _credited(platform: Platform, payment_id: uuid.UUID) -> bool:
    """Every refund of the payment is in its buyer's wallet (so none lands under a later test)."""
    rows = platform.sql("SELECT status FROM payment.refunds WHERE payment_id = $1", payment_id)
    return bool(rows) and all(row["status"] == "succeeded" for row in rows)


def _told(platform: Platform, buyer: Account, words: str) -> bool:
    page = platform.client("notification").get(
        "/api/notifications/me", params={"limit": 100}, headers=buyer.headers
    )
    assert page.status_code == 200, page.text
    return any(words in item["text"] for item in page.json()["items"])


def _nothing_stranded(platform: Platform, session_id: str) -> None:
    """After everything has drained: no stock held for a join that is not pending or paid, and
    no money kept (paid, not refunded) for a join that is not a paid participant."""
    held = platform.sql(
        "SELECT reference FROM warehouse.reservations WHERE group_reference = $1 "
        "AND status = 'reserved'",
        f"session:{session_id}",
    )
    for row in held:
        participant = _participant_row(platform, row["reference"])
        assert participant is not None and participant["status"] in (
            "pending_payment",
            "paid",
        ), (row["reference"], participant)
    joins = {
        row["reference"]
        for row in platform.sql(
            "SELECT reference FROM warehouse.reservations WHERE group_reference = $1",
            f"session:{session_id}",
        )
    } | {
        row["reservation_reference"]
        for row in platform.sql(
            "SELECT reservation_reference FROM group_buying.group_participants "
            "WHERE session_id = $1",
            uuid.UUID(session_id),
        )
    }
    for reference in joins:
        payment = _payment_row(platform, reference)
        if payment is not None and payment["status"] == "paid":
            participant = _participant_row(platform, reference)
            assert participant is not None and participant["status"] == "paid", reference


@dataclass(frozen=True)
class Scene:
    catalog: SeedCatalog
    session: dict[str, Any]
    buyer: Account

    @property
    def session_id(self) -> str:
        return self.session["id"]

    @property
    def small(self) -> str:
        return self.catalog.variants["S"]


def _scene(platform: Platform) -> Scene:
    catalog = create_seed_catalog(
        platform, stock={"S": 20, "M": 20, "L": 20}, max_stock_level=40, reorder_threshold=0
    )
    return Scene(catalog, open_group_buy(platform, catalog, target_moq=MOQ), platform.new_buyer())


# --- a join invoices what it records --------------------------------------------------------


def test_a_join_repriced_while_it_waited_is_invoiced_what_it_records(platform: Platform) -> None:
    """The join quotes 95,000 (fill 0%) and reserves; while it waits for the session row, a
    payment moves the fill to 50%. It records 85,000 and its invoice asks for 85,000 x 5; at
    the close (fill 100%, 65,000) the buyer gets exactly 20,000 x 5 back."""
    scene = _scene(platform)
    sql, args = _lock_session(scene.session_id)

    async def scenario() -> httpx.Response | httpx.HTTPError:
        async with _locked(platform, sql, args=args) as conn:
            join = _join_in_background(
                platform, scene.session_id, scene.buyer, {"variantId": scene.small, "quantity": 5}
            )
            await _reserved_for(platform, scene.session_id)  # quoted, reserved, now waiting
            await conn.execute(
                "UPDATE group_buying.group_buying_sessions SET paid_quantity = 5 WHERE id = $1",
                uuid.UUID(scene.session_id),
            )
        return await join

    response = run(scenario())
    assert isinstance(response, httpx.Response) and response.status_code == 201, response
    participant = response.json()["participant"]
    assert (participant["unitPrice"], participant["totalPrice"]) == (85000, 425000)
    payment = _payment_row(platform, participant["reservationReference"])
    assert payment is not None and payment["amount"] == 425000
    invoice = _sandbox_invoice(platform, payment["xendit_invoice_id"])
    assert invoice["amount"] == participant["totalPrice"]

    _pay(platform, payment["xendit_invoice_id"])
    assert eventually(
        lambda: participants_of(platform, scene.session_id)[participant["id"]]["status"] == "paid"
    )
    end_now(platform, scene.session_id)
    assert close_group_buy(platform, scene.session_id)["status"] == "success"
    assert _refunds(platform, payment["id"]) == [(100000, "tier_refund")]
    assert eventually(lambda: balance(platform, scene.buyer) == 100000)
    assert stock_of(platform, scene.catalog)["S"] == {
        "quantity": 15,
        "reserved": 0,
        "available": 15,
    }


def test_a_client_price_that_moved_while_joining_is_refused_and_undone(
    platform: Platform,
) -> None:
    scene = _scene(platform)
    sql, args = _lock_session(scene.session_id)
    body = {"variantId": scene.small, "quantity": 2, "unitPrice": 95000, "totalPrice": 190000}

    async def scenario() -> tuple[str, httpx.Response | httpx.HTTPError]:
        async with _locked(platform, sql, args=args) as conn:
            join = _join_in_background(platform, scene.session_id, scene.buyer, body)
            reserved = await _reserved_for(platform, scene.session_id)
            await conn.execute(
                "UPDATE group_buying.group_buying_sessions SET paid_quantity = 5 WHERE id = $1",
                uuid.UUID(scene.session_id),
            )
        return reserved["reference"], await join

    reference, response = run(scenario())
    assert isinstance(response, httpx.Response)
    assert "85.000" in assert_problem(response, 409, "price_mismatch")["detail"]
    assert _participant_row(platform, reference) is None
    assert _payment_row(platform, reference) is None
    assert eventually(lambda: _reservation_status(platform, reference) == "released")
    assert stock_of(platform, scene.catalog)["S"]["available"] == 20
    # The paid quantity this test made up goes back, so that the platform audits clean.
    platform.sql(
        "UPDATE group_buying.group_buying_sessions SET paid_quantity = 0 WHERE id = $1",
        uuid.UUID(scene.session_id),
    )


# --- crashes and timeouts -------------------------------------------------------------------


def test_a_join_killed_between_its_reserve_and_its_participant_releases_the_stock(
    platform: Platform,
) -> None:
    """group-buying is SIGKILLed while the join, its stock reserved, waits for the session
    row: no participant is ever written. The hold lapses (its invoice's end plus the grace)
    and warehouse-service's sweeper gives the stock back."""
    scene = _scene(platform)
    supervisor = platform.supervisor
    sql, args = _lock_session(scene.session_id)

    async def scenario() -> asyncpg.Record:
        async with _locked(platform, sql, args=args):
            join = _join_in_background(
                platform, scene.session_id, scene.buyer, {"variantId": scene.small, "quantity": 3}
            )
            reserved = await _reserved_for(platform, scene.session_id)
            group_buying = supervisor.processes["group-buying"].process
            assert group_buying is not None
            group_buying.kill()
            group_buying.wait()
            assert isinstance(await join, httpx.HTTPError)  # the buyer saw the process die
        return reserved

    reserved = run(scenario())
    supervisor.start_one("group-buying")
    supervisor.wait_ready()
    reference = reserved["reference"]
    assert _participant_row(platform, reference) is None
    assert reserved["status"] == "reserved" and reserved["expires_at"] is not None
    assert stock_of(platform, scene.catalog)["S"]["reserved"] == 3  # held until the hold lapses

    platform.sql(
        "UPDATE warehouse.reservations SET expires_at = now() - interval '1 second' "
        "WHERE reference = $1",
        reference,
    )
    assert eventually(lambda: _reservation_status(platform, reference) == "released")
    assert stock_of(platform, scene.catalog)["S"] == {
        "quantity": 20,
        "reserved": 0,
        "available": 20,
    }
    _nothing_stranded(platform, scene.session_id)


async def _join_timed_out_on_payment(platform: Platform, scene: Scene) -> str:
    """A join whose payment creation waits on payment-service's table (locked by the test)
    until the join gives up; returns the join's reference once its participant is cancelled."""
    async with _locked(platform, "LOCK TABLE payment.payments IN SHARE MODE"):
        join = _join_in_background(
            platform, scene.session_id, scene.buyer, {"variantId": scene.small, "quantity": 4}
        )
        response = await join
        assert isinstance(response, httpx.Response)
        assert_problem(response, 503)
        reserved = await _reserved_for(platform, scene.session_id)
        reference = reserved["reference"]
        cancelled = await _poll(
            platform,
            "SELECT cancel_reason FROM group_buying.group_participants "
            "WHERE reservation_reference = $1 AND status = 'cancelled'",
            reference,
        )
        assert cancelled["cancel_reason"] == "join_failed"
    return reference


def test_a_payment_made_after_its_join_gave_up_is_expired(platform: Platform) -> None:
    """payment-service answers the join's payment only after the join timed out (the test held
    the payments table): the join cancelled its participant, released its stock and gave the
    payment up by reference. The creation that lands afterwards ends expired (or, refused,
    never made): nothing can be paid for the failed join."""
    scene = _scene(platform)
    reference = run(_join_timed_out_on_payment(platform, scene))
    assert _reservation_status(platform, reference) == "released"
    assert stock_of(platform, scene.catalog)["S"]["available"] == 20

    def settled() -> bool:
        payment = _payment_row(platform, reference)
        if payment is None:
            voided = platform.sql(
                "SELECT 1 FROM payment.voided_references WHERE reference = $1", reference
            )
            return bool(voided)
        return payment["status"] in ("expired", "failed")

    assert eventually(settled, timeout=60)
    time.sleep(1.0)  # a creation still queued behind the lock would land now
    payment = _payment_row(platform, reference)
    if payment is not None:
        assert payment["status"] in ("expired", "failed")
        if payment["xendit_invoice_id"]:
            invoice = _sandbox_invoice(platform, payment["xendit_invoice_id"])
            assert invoice["status"] == "EXPIRED"
    _nothing_stranded(platform, scene.session_id)


def test_money_paid_for_a_join_that_gave_up_goes_back_in_full(platform: Platform) -> None:
    """As above, but the buyer pays the late invoice before the join's giving-up reaches
    payment-service (held back by the test on payment-service's idempotency store, which only
    keyed calls use): the payment is paid for a cancelled participant, so it is refunded in
    full to the buyer's wallet, once, and the buyer is told."""
    marks = outbox_marks(platform)
    scene = _scene(platform)

    async def scenario() -> tuple[str, asyncpg.Record]:
        async with _locked(platform, "LOCK TABLE payment.idempotency_keys IN SHARE MODE"):
            reference = await _join_timed_out_on_payment(platform, scene)
            invoiced = await _poll(
                platform,
                "SELECT id, amount, xendit_invoice_id FROM payment.payments "
                "WHERE reference = $1 AND xendit_invoice_id IS NOT NULL",
                reference,
            )
            await asyncio.to_thread(_pay, platform, invoiced["xendit_invoice_id"])
            await _poll(
                platform,
                "SELECT 1 FROM payment.payments WHERE reference = $1 AND status = 'paid'",
                reference,
            )
        return reference, invoiced

    reference, invoiced = run(scenario())
    amount = invoiced["amount"]
    assert amount == 4 * 95000
    assert eventually(lambda: _payment_row(platform, reference)["status"] == "refunded", 60)
    assert _refunds(platform, invoiced["id"]) == [(amount, "join_failed")]
    assert eventually(lambda: balance(platform, scene.buyer) == amount)
    participant = _participant_row(platform, reference)
    assert participant is not None
    assert (participant["status"], participant["cancel_reason"]) == ("refunded", "join_failed")
    assert eventually(lambda: _told(platform, scene.buyer, "refunded to your Laku wallet"))
    outboxes_done(platform, marks)  # everything queued has run: a second credit would be here
    assert balance(platform, scene.buyer) == amount  # once
    _nothing_stranded(platform, scene.session_id)


# --- holds that lapse -----------------------------------------------------------------------


def _join_now(platform: Platform, scene: Scene, quantity: int) -> dict[str, Any]:
    response = platform.client("group-buying").post(
        f"/api/group-buying/{scene.session_id}/join",
        json={"variantId": scene.small, "quantity": quantity},
        headers=scene.buyer.headers,
    )
    assert response.status_code == 201, response.text
    return response.json()["participant"]


def test_an_unpaid_join_whose_hold_lapsed_is_swept(platform: Platform) -> None:
    """No word ever came from payment-service: once the join's hold has lapsed, group-buying's
    sweeper cancels it, expires its invoice by reference and releases its stock."""
    scene = _scene(platform)
    participant = _join_now(platform, scene, 2)
    reference = participant["reservationReference"]
    platform.sql(
        "UPDATE group_buying.group_participants SET hold_expires_at = now() - interval '1 second' "
        "WHERE id = $1",
        uuid.UUID(participant["id"]),
    )
    assert eventually(lambda: _participant_row(platform, reference)["status"] == "cancelled")
    assert _participant_row(platform, reference)["cancel_reason"] == "hold_lapsed"
    assert eventually(lambda: _payment_row(platform, reference)["status"] == "expired")
    assert eventually(lambda: _reservation_status(platform, reference) == "released")
    invoice = _sandbox_invoice(platform, _payment_row(platform, reference)["xendit_invoice_id"])
    assert invoice["status"] == "EXPIRED"
    _nothing_stranded(platform, scene.session_id)


def test_paid_after_its_hold_lapsed_gives_the_money_back(platform: Platform) -> None:
    """The hold lapsed and the sweeper released the stock before the payment arrived: the
    confirmation is refused, so the participant does not keep a place without stock. It is
    cancelled, leaves the paid quantity, and its money goes back in full."""
    scene = _scene(platform)
    participant = _join_now(platform, scene, 3)
    reference = participant["reservationReference"]
    platform.sql(
        "UPDATE warehouse.reservations SET expires_at = now() - interval '1 second' "
        "WHERE reference = $1",
        reference,
    )
    assert eventually(lambda: _reservation_status(platform, reference) == "released")
    payment = _payment_row(platform, reference)
    _pay(platform, payment["xendit_invoice_id"])

    assert eventually(lambda: _participant_row(platform, reference)["status"] == "refunded", 30)
    assert _participant_row(platform, reference)["cancel_reason"] == "hold_lapsed"
    session = platform.client("group-buying").get(f"/api/group-buying/{scene.session_id}").json()
    assert (session["paidQuantity"], session["status"]) == (0, "forming")
    assert _refunds(platform, payment["id"]) == [(3 * 95000, "join_failed")]
    assert eventually(lambda: balance(platform, scene.buyer) == 3 * 95000)
    assert eventually(lambda: _payment_row(platform, reference)["status"] == "refunded")
    assert eventually(lambda: _credited(platform, payment["id"]))
    assert stock_of(platform, scene.catalog)["S"]["reserved"] == 0
    _nothing_stranded(platform, scene.session_id)


def test_money_paid_for_a_reference_with_no_participant_goes_back(platform: Platform) -> None:
    """A payment names a participant group-buying never recorded: group-buying answers that it
    does not know it, and payment-service refunds it in full."""
    buyer = platform.new_buyer()
    reference = f"participant:{uuid.uuid4()}"
    made = platform.client("payment").post(
        "/api/payments",
        json={
            "reference": reference,
            "userId": buyer.id,
            "amount": 70000,
            "description": "a join nobody recorded",
        },
        headers=admin_headers(platform),
    )
    assert made.status_code == 201, made.text
    invoices = platform.client("xendit-sandbox").get("/sandbox/invoices").json()
    [invoice] = [i for i in invoices if i["external_id"] == made.json()["paymentCode"]]
    _pay(platform, invoice["id"])
    assert eventually(lambda: _payment_row(platform, reference)["status"] == "refunded", 30)
    assert _refunds(platform, uuid.UUID(made.json()["id"])) == [(70000, "join_failed")]
    assert eventually(lambda: balance(platform, buyer) == 70000)
    assert eventually(lambda: _told(platform, buyer, "Rp 70.000 refunded to your Laku wallet"))


def test_giving_a_payment_up_by_reference_before_or_after_it_is_made(platform: Platform) -> None:
    """payment-service's side of an undo: a reference given up before its payment was made is
    void, and the creation landing afterwards is refused with nothing made; one given up after
    is expired, its invoice closed; a paid one is left for its refund."""
    payments = platform.client("payment")
    buyer = platform.new_buyer()

    def give_up(reference: str) -> httpx.Response:
        return payments.post(
            f"/api/payments/by-reference/{reference}/expire", headers=admin_headers(platform)
        )

    def create(reference: str) -> httpx.Response:
        body = {"reference": reference, "userId": buyer.id, "amount": 50000, "description": "x"}
        return payments.post("/api/payments", json=body, headers=admin_headers(platform))

    early = f"participant:{uuid.uuid4()}"
    for _ in range(2):
        voided = give_up(early)
        assert voided.status_code == 200, voided.text
        assert (voided.json()["status"], voided.json()["payment"]) == ("void", None)
    invoices = len(platform.client("xendit-sandbox").get("/sandbox/invoices").json())
    assert_problem(create(early), 409, "payment_voided")
    assert _payment_row(platform, early) is None
    assert len(platform.client("xendit-sandbox").get("/sandbox/invoices").json()) == invoices

    late = f"participant:{uuid.uuid4()}"
    made = create(late)
    assert made.status_code == 201, made.text
    expired = give_up(late)
    assert expired.status_code == 200, expired.text
    assert (expired.json()["status"], expired.json()["payment"]["status"]) == ("expired", "expired")
    invoice = _sandbox_invoice(platform, made.json()["invoiceUrl"].rsplit("/", 1)[-1])
    assert invoice["status"] == "EXPIRED"

    paid = f"participant:{uuid.uuid4()}"
    made = create(paid)
    _pay(platform, made.json()["invoiceUrl"].rsplit("/", 1)[-1])
    assert eventually(lambda: _payment_row(platform, paid)["status"] != "pending")
    assert_problem(give_up(paid), 409, "payment_already_paid")
    # It names no participant: its money goes back (waited for, not to land under another test).
    assert eventually(lambda: _credited(platform, uuid.UUID(made.json()["id"])))
