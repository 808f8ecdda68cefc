"""payment-service: escrow payments through Xendit invoices (the sandbox), the invoice webhook
(seed step 4), expiry, and who may see which payment."""

import asyncio
import re
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from laku.testing.database import run
from laku.testing.platform import Account, Platform, bearer
from tests.payments import WRITERS_TO_PAYMENT
from tests.service_logs import wait_logged
from tests.support import (
    admin_headers,
    assert_problem,
    eventually,
    outboxes_idle,
    sandbox_webhook_attempts,
    snapshot,
)

Payment = dict[str, Any]


def _service_headers(platform: Platform) -> dict[str, str]:
    """As group-buying calls: with a `service` token."""
    return platform.service_headers("group-buying")


def _callback_headers(platform: Platform) -> dict[str, str]:
    return {"x-callback-token": platform.settings.xendit_callback_token.get_secret_value()}


def _body(user_id: str | None = None, **fields: Any) -> dict[str, Any]:
    return {
        "reference": f"participant:{uuid.uuid4()}",
        "userId": user_id or str(uuid.uuid4()),
        "amount": 475_000,
        "description": "Premium T-Shirt M x 5",
        **fields,
    }


def _create(platform: Platform, body: dict[str, Any]) -> httpx.Response:
    return platform.client("payment").post(
        "/api/payments", json=body, headers=_service_headers(platform)
    )


def _created(platform: Platform, **fields: Any) -> Payment:
    response = _create(platform, _body(**fields))
    assert response.status_code == 201, response.text
    return response.json()


def _get(platform: Platform, payment_id: str) -> Payment:
    response = platform.client("payment").get(
        f"/api/payments/{payment_id}", headers=admin_headers(platform)
    )
    assert response.status_code == 200, response.text
    return response.json()


def _invoice_id(payment: Payment) -> str:
    """The sandbox's checkout URL ends with the invoice id."""
    return payment["invoiceUrl"].rsplit("/", 1)[-1]


def _invoices_for(platform: Platform, payment_code: str) -> list[dict[str, Any]]:
    invoices = platform.client("xendit-sandbox").get("/sandbox/invoices").json()
    return [invoice for invoice in invoices if invoice["external_id"] == payment_code]


def _sandbox(platform: Platform, payment: Payment, action: str) -> httpx.Response:
    return platform.client("xendit-sandbox").post(
        f"/sandbox/invoices/{_invoice_id(payment)}/{action}"
    )


def _callback(payment: Payment, status: str, **fields: Any) -> dict[str, Any]:
    """The invoice callback as Xendit sends it."""
    body = {
        "id": _invoice_id(payment),
        "external_id": payment["paymentCode"],
        "user_id": "5f0c1b2a3d4e5f6a7b8c9d0e",
        "is_high": False,
        "status": status,
        "merchant_name": "Laku",
        "amount": payment["amount"],
        "currency": "IDR",
        "created": "2026-11-25T08:00:00.000Z",
        "updated": "2026-11-25T08:30:00.000Z",
        **fields,
    }
    if status == "PAID":
        body.setdefault("paid_amount", payment["amount"])
        body.setdefault("paid_at", "2026-11-25T08:30:00.000Z")
        body.setdefault("payment_method", "BANK_TRANSFER")
    return body


def _webhook(
    platform: Platform, body: dict[str, Any], headers: dict[str, str] | None = None
) -> httpx.Response:
    return platform.client("payment").post(
        "/api/payments/webhook",
        json=body,
        headers=_callback_headers(platform) if headers is None else headers,
    )


def _paid_in_sandbox(platform: Platform, payment: Payment) -> Payment:
    """The buyer pays the invoice; the sandbox's PAID callback makes the payment paid (and,
    for a reference group-buying does not know, refunded after: see `_paid`)."""
    _sandbox(platform, payment, "pay").raise_for_status()
    return _paid(platform, payment)


def _status_becomes(platform: Platform, payment: Payment, status: str) -> Payment:
    latest = eventually(
        lambda: (current := _get(platform, payment["id"]))["status"] == status and current
    )
    assert latest, f"{payment['id']} never became {status}: {_get(platform, payment['id'])}"
    return latest


def _paid(platform: Platform, payment: Payment) -> Payment:
    """The payment once recorded paid. Its reference names no participant group-buying knows,
    so it is then refunded in full (tests/test_join_saga.py): its status and escrow move on
    from paid and held to refunded, while what it recorded of being paid stays."""
    latest = eventually(lambda: (current := _get(platform, payment["id"]))["paidAt"] and current)
    assert latest, f"{payment['id']} was never paid: {_get(platform, payment['id'])}"
    moved = (latest["status"], latest["escrowStatus"])
    assert moved in (("paid", "held"), ("refunded", "refunded")), moved
    return latest


def _as_paid(payment: Payment) -> Payment:
    """What a payment recorded of being paid, without what a refund changes."""
    return {
        name: value
        for name, value in payment.items()
        if name not in ("status", "escrowStatus", "refundedAmount")
    }


def _given_back_once(platform: Platform, payment: Payment) -> None:
    """Refunded in full, once, and credited to the buyer's wallet (waited for, so that no
    credit lands later under another test)."""
    refunded = _status_becomes(platform, payment, "refunded")
    assert refunded["refundedAmount"] == refunded["amount"]

    def refunds() -> list[tuple[int, str, str]]:
        rows = platform.sql(
            "SELECT amount, reason, status FROM payment.refunds WHERE payment_id = $1",
            uuid.UUID(payment["id"]),
        )
        return [(row["amount"], row["reason"], row["status"]) for row in rows]

    credited = [(refunded["amount"], "join_failed", "succeeded")]
    assert eventually(lambda: refunds() == credited), refunds()


def _outbox_reports(platform: Platform, payment_id: str) -> list[dict[str, Any]]:
    """What payment-service queued for group-buying about one payment."""
    rows = platform.sql(
        "SELECT kind, payload::text AS payload FROM payment.outbox "
        "WHERE payload->>'paymentId' = $1 ORDER BY id",
        payment_id,
    )
    return [{"kind": row["kind"], "payload": row["payload"]} for row in rows]


def _own_state(platform: Platform, payment: Payment) -> tuple[Payment, list[dict[str, Any]]]:
    """One payment and what it queued: compared before and after, where the whole schema
    would also see other tests' refunds still being credited."""
    return _get(platform, payment["id"]), _outbox_reports(platform, payment["id"])


def _report_statuses(platform: Platform, payment_id: str) -> list[str]:
    return [
        re.search(r'"status": "(\w+)"', row["payload"]).group(1)
        for row in _outbox_reports(platform, payment_id)
    ]


# Creating -------------------------------------------------------------------------------------


def test_create_makes_a_sandbox_invoice(platform: Platform) -> None:
    buyer = platform.new_buyer()
    body = _body(buyer.id, payerEmail=buyer.email)
    response = _create(platform, body)
    assert response.status_code == 201, response.text
    payment = response.json()
    assert re.fullmatch(r"PAY-[0-9A-F]{12}", payment["paymentCode"])
    assert payment["reference"] == body["reference"]
    assert payment["userId"] == buyer.id
    assert (payment["amount"], payment["currency"]) == (475_000, "IDR")
    assert (payment["status"], payment["escrowStatus"], payment["paidAt"]) == (
        "pending",
        "none",
        None,
    )
    assert payment["invoiceUrl"].startswith(platform.url("xendit-sandbox"))

    [invoice] = _invoices_for(platform, payment["paymentCode"])
    assert invoice["id"] == _invoice_id(payment)
    assert (invoice["amount"], invoice["status"]) == (475_000, "PENDING")
    assert invoice["description"] == body["description"]
    assert invoice["payer_email"] == buyer.email
    expires_at = datetime.fromisoformat(payment["expiresAt"])
    assert abs(expires_at - datetime.fromisoformat(invoice["expiry_date"])) < timedelta(seconds=1)
    # The default invoice lasts a day.
    assert timedelta(hours=23) < expires_at - datetime.now(UTC) <= timedelta(hours=24)
    assert platform.client("xendit-sandbox").get(payment["invoiceUrl"]).status_code == 200
    assert _get(platform, payment["id"]) == payment


def test_expires_at_sets_the_invoice_duration(platform: Platform) -> None:
    wanted = datetime.now(UTC) + timedelta(hours=2)
    payment = _created(platform, expiresAt=wanted.isoformat())
    [invoice] = _invoices_for(platform, payment["paymentCode"])
    assert abs(datetime.fromisoformat(invoice["expiry_date"]) - wanted) < timedelta(seconds=2)
    assert abs(datetime.fromisoformat(payment["expiresAt"]) - wanted) < timedelta(seconds=2)


def test_same_reference_returns_the_first_payment_and_one_invoice(platform: Platform) -> None:
    body = _body()
    first = _create(platform, body)
    again = _create(platform, body)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    # Even with other details the reference stays bound to its first payment.
    different = _create(platform, {**body, "amount": 1})
    assert different.status_code == 200
    assert different.json()["id"] == first.json()["id"]
    assert len(_invoices_for(platform, first.json()["paymentCode"])) == 1


def test_concurrent_creates_with_one_reference_make_one_invoice(platform: Platform) -> None:
    body = _body()
    headers = _service_headers(platform)

    def create(_: int) -> httpx.Response:
        with httpx.Client(base_url=platform.url("payment"), timeout=10.0) as client:
            return client.post("/api/payments", json=body, headers=headers)

    with ThreadPoolExecutor(max_workers=6) as pool:
        responses = list(pool.map(create, range(6)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(201) == 1, [r.text for r in responses]
    # The others got the payment, or were told it was still being created (retry later).
    for response in responses:
        if response.status_code == 409:
            assert_problem(response, 409, "payment_in_progress")
            assert response.headers["retry-after"] == "1"
        else:
            assert response.status_code in (200, 201)
    [payment] = {r.json()["id"] for r in responses if r.status_code < 300}
    assert len(_invoices_for(platform, _get(platform, payment)["paymentCode"])) == 1
    assert _create(platform, body).status_code == 200


def test_a_retried_create_is_answered_by_its_reference(platform: Platform) -> None:
    """Internal callers send an Idempotency-Key; a payment answers the retry by its reference
    (the same payment, one invoice) without the key store."""
    body = _body()
    headers = {**_service_headers(platform), "Idempotency-Key": f"join:{uuid.uuid4()}"}
    first = platform.client("payment").post("/api/payments", json=body, headers=headers)
    again = platform.client("payment").post("/api/payments", json=body, headers=headers)
    assert (first.status_code, again.status_code) == (201, 200)
    assert "idempotent-replayed" not in again.headers
    assert again.json() == first.json()


@pytest.mark.parametrize(
    "change",
    [
        {"amount": 0},
        {"amount": -1000},
        {"amount": 1.5},
        {"amount": "1000"},
        {"amount": None},
        {"amount": 10**16},
        {"reference": None},
        {"reference": ""},
        {"reference": "has spaces"},
        {"userId": "not-a-uuid"},
        {"description": ""},
        {"payerEmail": "not-an-email"},
        {"expiresAt": "2020-01-01T00:00:00Z"},
        {"expiresAt": "2999-01-01T00:00:00Z"},
        {"expiresAt": "2030-01-01T00:00:00"},  # no time zone
        {"currency": "USD"},
    ],
)
def test_invalid_create_is_refused_and_changes_nothing(
    platform: Platform, change: dict[str, Any]
) -> None:
    body = {key: value for key, value in {**_body(), **change}.items() if value is not None}
    # Nothing another test queued (a refund on its way) changes the schema meanwhile.
    outboxes_idle(platform, *WRITERS_TO_PAYMENT)
    before = snapshot(platform, "payment")
    invoices_before = len(platform.client("xendit-sandbox").get("/sandbox/invoices").json())
    assert_problem(_create(platform, body), 422, "invalid_input")
    assert snapshot(platform, "payment") == before
    assert len(platform.client("xendit-sandbox").get("/sandbox/invoices").json()) == invoices_before


def test_only_services_and_admins_create_or_expire(platform: Platform) -> None:
    buyer = platform.new_buyer()
    payments = platform.client("payment")
    before = snapshot(platform, "payment")
    assert_problem(payments.post("/api/payments", json=_body(buyer.id)), 401)
    assert_problem(payments.post("/api/payments", json=_body(buyer.id), headers=buyer.headers), 403)
    assert_problem(
        payments.post("/api/payments", json=_body(buyer.id), headers=bearer("not-a-token")),
        401,
    )
    assert snapshot(platform, "payment") == before

    by_admin = payments.post("/api/payments", json=_body(buyer.id), headers=admin_headers(platform))
    assert by_admin.status_code == 201, by_admin.text
    expire = f"/api/payments/{by_admin.json()['id']}/expire"
    assert_problem(payments.post(expire), 401)
    assert_problem(payments.post(expire, headers=buyer.headers), 403)
    assert _get(platform, by_admin.json()["id"])["status"] == "pending"


def test_xendit_down_answers_503_and_a_retry_succeeds(platform: Platform) -> None:
    body = _body()
    platform.supervisor.stop("xendit-sandbox")
    try:
        down = _create(platform, body)
        assert_problem(down, 503, "payment_provider_unavailable")
        assert down.headers.get("retry-after")
        # Nothing half made is visible to callers: the payment is not pending without an invoice.
        listed = platform.client("payment").get(
            "/api/payments", params={"userId": body["userId"]}, headers=admin_headers(platform)
        )
        assert [p["status"] for p in listed.json()["items"]] == ["failed"]
        assert listed.json()["items"][0]["invoiceUrl"] is None
    finally:
        platform.supervisor.start_one("xendit-sandbox")
        platform.supervisor.wait_ready()
    retried = _create(platform, body)
    assert retried.status_code == 201, retried.text
    payment = retried.json()
    assert (payment["status"], payment["reference"]) == ("pending", body["reference"])
    assert len(_invoices_for(platform, payment["paymentCode"])) == 1
    assert _create(platform, body).json()["id"] == payment["id"]


def test_a_creation_cut_short_is_taken_over_once_abandoned(platform: Platform) -> None:
    """A process that died between writing the payment and recording its invoice leaves it
    pending without one: while that may still be a creation in flight, callers are asked to
    come back; once it is clearly abandoned, a retry with the reference completes it."""
    body = _body()
    payment_id, payment_code = uuid.uuid4(), "PAY-ABCDEF" + uuid.uuid4().hex[:6].upper()
    platform.sql(
        "INSERT INTO payment.payments (id, payment_code, reference, user_id, amount, "
        "description, status, expires_at) "
        "VALUES ($1, $2, $3, $4, $5, $6, 'pending', now() + interval '1 day')",
        payment_id,
        payment_code,
        body["reference"],
        uuid.UUID(body["userId"]),
        body["amount"],
        body["description"],
    )
    in_flight = _create(platform, body)
    assert_problem(in_flight, 409, "payment_in_progress")
    assert in_flight.headers["retry-after"] == "1"
    assert_problem(
        platform.client("payment").post(
            f"/api/payments/{payment_id}/expire", headers=_service_headers(platform)
        ),
        409,
        "payment_in_progress",
    )
    # A callback cannot be matched to an invoice not yet recorded: refused, so Xendit retries.
    early = _webhook(platform, {"id": "f" * 24, "external_id": payment_code, "status": "PAID"})
    assert_problem(early, 409, "payment_in_progress")

    platform.sql(
        "UPDATE payment.payments SET updated_at = now() - interval '3 minutes' WHERE id = $1",
        payment_id,
    )
    taken_over = _create(platform, body)
    assert taken_over.status_code == 201, taken_over.text
    payment = taken_over.json()
    assert (payment["id"], payment["paymentCode"]) == (str(payment_id), payment_code)
    assert payment["invoiceUrl"] is not None
    assert len(_invoices_for(platform, payment_code)) == 1


def test_statuses_other_than_paid_or_expired_are_ignored(platform: Platform) -> None:
    payment = _created(platform)
    before = snapshot(platform, "payment")
    response = _webhook(platform, _callback(payment, "PENDING"))
    assert response.status_code == 200
    assert response.json() == {"status": "ignored"}
    assert snapshot(platform, "payment") == before


# The webhook (seed step 4) ----------------------------------------------------------------


def test_paying_in_the_sandbox_holds_the_money_in_escrow(platform: Platform) -> None:
    payment = _created(platform, user_id=platform.new_buyer().id)
    assert _sandbox(platform, payment, "pay").status_code == 200
    paid = _paid(platform, payment)
    [invoice] = _invoices_for(platform, payment["paymentCode"])
    assert datetime.fromisoformat(paid["paidAt"]) == datetime.fromisoformat(invoice["paid_at"])
    [report] = _outbox_reports(platform, payment["id"])
    assert report["kind"] == "report_payment_event"
    assert payment["reference"] in report["payload"]
    assert _report_statuses(platform, payment["id"]) == ["paid"]
    _given_back_once(platform, payment)


def test_the_same_paid_webhook_five_times_changes_the_payment_once(platform: Platform) -> None:
    payment = _created(platform, user_id=platform.new_buyer().id)
    # Paid at Xendit, its own callback lost: the five below are all payment-service hears.
    _sandbox(platform, payment, "lose-callbacks").raise_for_status()
    _sandbox(platform, payment, "pay").raise_for_status()
    assert _get(platform, payment["id"])["status"] == "pending"
    callback = _callback(payment, "PAID", paid_at="2026-11-25T08:30:00.000Z")

    async def deliver_at_once() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=platform.url("payment"), timeout=10.0) as client:
            return await asyncio.gather(
                *(
                    client.post(
                        "/api/payments/webhook", json=callback, headers=_callback_headers(platform)
                    )
                    for _ in range(5)
                )
            )

    responses = run(deliver_at_once())
    assert [r.status_code for r in responses] == [200] * 5, [r.text for r in responses]
    assert {r.json()["status"] for r in responses} == {"processed"}
    paid = _paid(platform, payment)
    # When Xendit says it was paid, not what the callback said.
    [invoice] = _invoices_for(platform, payment["paymentCode"])
    assert datetime.fromisoformat(paid["paidAt"]) == datetime.fromisoformat(invoice["paid_at"])
    assert _report_statuses(platform, payment["id"]) == ["paid"]

    # SETTLED, which follows PAID once the money is disbursed, changes nothing either.
    assert _webhook(platform, _callback(payment, "SETTLED")).status_code == 200
    assert _as_paid(_get(platform, payment["id"])) == _as_paid(paid)
    assert _report_statuses(platform, payment["id"]) == ["paid"]
    _given_back_once(platform, payment)


def test_resent_sandbox_webhooks_change_the_payment_once(platform: Platform) -> None:
    payment = _created(platform, user_id=platform.new_buyer().id)
    _sandbox(platform, payment, "pay").raise_for_status()
    for _ in range(4):
        _sandbox(platform, payment, "resend-webhook").raise_for_status()
    attempts = eventually(
        lambda: (
            (
                found := platform.client("xendit-sandbox")
                .get("/sandbox/webhooks", params={"invoiceId": _invoice_id(payment)})
                .json()
            )
            and sum(a["delivered"] for a in found) == 5
            and found
        )
    )
    assert attempts, "the sandbox did not deliver five callbacks"
    assert _report_statuses(platform, payment["id"]) == ["paid"]
    _given_back_once(platform, payment)


def test_expired_after_paid_is_ignored(platform: Platform) -> None:
    payment = _created(platform, user_id=platform.new_buyer().id)
    paid = _paid_in_sandbox(platform, payment)
    late = _webhook(platform, _callback(payment, "EXPIRED"))
    assert late.status_code == 200
    assert _as_paid(_get(platform, payment["id"])) == _as_paid(paid)
    assert _get(platform, payment["id"])["status"] != "expired"
    _given_back_once(platform, payment)
    assert _report_statuses(platform, payment["id"]) == ["paid"]
    # Nor can it be expired on request once paid.
    refused = platform.client("payment").post(
        f"/api/payments/{payment['id']}/expire", headers=_service_headers(platform)
    )
    assert_problem(refused, 409, "payment_already_paid")


def test_paid_after_expired_is_ignored(platform: Platform) -> None:
    payment = _created(platform)
    assert _sandbox(platform, payment, "expire").status_code == 200
    expired = _status_becomes(platform, payment, "expired")
    assert (expired["status"], expired["escrowStatus"]) == ("expired", "none")
    # Xendit shows the invoice EXPIRED, so a PAID callback for it is not believed.
    assert _webhook(platform, _callback(payment, "PAID")).status_code == 200
    assert _get(platform, payment["id"]) == expired
    assert _report_statuses(platform, payment["id"]) == ["expired"]


def test_expiring_in_the_sandbox_expires_the_payment(platform: Platform) -> None:
    payment = _created(platform)
    assert _sandbox(platform, payment, "expire").status_code == 200
    expired = _status_becomes(platform, payment, "expired")
    assert (expired["escrowStatus"], expired["paidAt"]) == ("none", None)
    assert _report_statuses(platform, payment["id"]) == ["expired"]
    # The buyer can no longer pay it.
    assert _sandbox(platform, payment, "pay").status_code == 409


def test_wrong_or_missing_callback_token_is_refused_and_changes_nothing(
    platform: Platform,
) -> None:
    payment = _created(platform)
    callback = _callback(payment, "PAID")
    before = snapshot(platform, "payment")
    for headers in ({}, {"x-callback-token": "guessed"}, {"x-callback-token": ""}):
        assert_problem(_webhook(platform, callback, headers), 401, "invalid_callback_token")
    # A bearer token is no substitute for the callback token.
    assert_problem(
        _webhook(platform, callback, admin_headers(platform)), 401, "invalid_callback_token"
    )
    assert snapshot(platform, "payment") == before
    assert _get(platform, payment["id"])["status"] == "pending"


def test_callbacks_for_no_payment_of_ours_are_acknowledged_and_ignored(
    platform: Platform,
) -> None:
    payment = _created(platform)
    before = snapshot(platform, "payment")
    unknown = _webhook(platform, _callback(payment, "PAID", external_id="PAY-000000000000"))
    other_invoice = _webhook(platform, _callback(payment, "PAID", id="0" * 24))
    wrong_amount = _webhook(platform, _callback(payment, "PAID", amount=1, paid_amount=1))
    for response in (unknown, other_invoice, wrong_amount):
        assert response.status_code == 200, response.text
        assert response.json() == {"status": "ignored"}
    assert snapshot(platform, "payment") == before


def test_a_forged_paid_callback_is_checked_with_xendit_and_changes_nothing(
    platform: Platform,
) -> None:
    """The callback token is right, but Xendit shows the invoice unpaid: nothing moves."""
    payment = _created(platform)
    before = snapshot(platform, "payment")
    forged = _webhook(platform, _callback(payment, "PAID"))
    seed_form = _webhook(
        platform,
        {
            "external_id": payment["paymentCode"],
            "status": "PAID",
            "paid_at": "2025-11-20T15:30:00Z",
        },
    )
    for response in (forged, seed_form):
        assert response.status_code == 200, response.text
        assert response.json() == {"status": "ignored"}
    assert snapshot(platform, "payment") == before
    assert _get(platform, payment["id"])["status"] == "pending"
    [invoice] = _invoices_for(platform, payment["paymentCode"])
    assert invoice["status"] == "PENDING"
    unconfirmed = wait_logged(
        platform, "payment", "webhook_status_not_confirmed", payment_code=payment["paymentCode"]
    )
    assert {(e["reported"], e["xendit_status"], e["level"]) for e in unconfirmed} == {
        ("PAID", "PENDING", "warning")
    }


def test_the_seed_callback_body_is_accepted_after_a_real_payment(platform: Platform) -> None:
    """Seed step 4's body (no invoice id, no amount) is matched by `external_id` and verified
    by reading back the invoice stored for the payment."""
    payment = _created(platform)
    _sandbox(platform, payment, "lose-callbacks").raise_for_status()
    _sandbox(platform, payment, "pay").raise_for_status()
    seed_body = {
        "external_id": payment["paymentCode"],
        "status": "PAID",
        "paid_at": "2025-11-20T15:30:00Z",
    }
    response = _webhook(platform, seed_body)
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "processed"}
    paid = _get(platform, payment["id"])
    assert (paid["status"], paid["escrowStatus"]) == ("paid", "held")
    [invoice] = _invoices_for(platform, payment["paymentCode"])
    assert datetime.fromisoformat(paid["paidAt"]) == datetime.fromisoformat(invoice["paid_at"])
    assert _report_statuses(platform, payment["id"]) == ["paid"]
    assert (
        sandbox_webhook_attempts(platform.client("xendit-sandbox"), invoiceId=invoice["id"]) == []
    )  # the sandbox's own callback was lost: only the seed body told payment-service


def test_a_callback_naming_another_invoice_or_amount_changes_nothing(platform: Platform) -> None:
    payment = _created(platform)
    _sandbox(platform, payment, "lose-callbacks").raise_for_status()
    _sandbox(platform, payment, "pay").raise_for_status()  # paid at Xendit, for real
    before = _own_state(platform, payment)

    other_invoice = _webhook(platform, _callback(payment, "PAID", id="0" * 24))
    assert other_invoice.json() == {"status": "ignored"}
    wait_logged(
        platform, "payment", "webhook_for_other_invoice", payment_code=payment["paymentCode"]
    )
    # Xendit's invoice for another amount than the payment's (here: the payment's record
    # altered underneath) is not the payment's, whatever the callback says.
    platform.sql(
        "UPDATE payment.payments SET amount = amount + 1 WHERE id = $1", uuid.UUID(payment["id"])
    )
    try:
        other_amount = _webhook(platform, _callback(payment, "PAID", amount=payment["amount"] + 1))
        assert other_amount.json() == {"status": "ignored"}
    finally:
        platform.sql(
            "UPDATE payment.payments SET amount = amount - 1 WHERE id = $1",
            uuid.UUID(payment["id"]),
        )
    [mismatch] = wait_logged(
        platform, "payment", "invoice_does_not_match_payment", payment_code=payment["paymentCode"]
    )
    assert mismatch["level"] == "error"
    assert (
        mismatch["reason"]
        == f"amount {payment['amount']} is not the payment's {payment['amount'] + 1}"
    )
    assert _own_state(platform, payment) == before

    # The callback's own amount is not what is checked: Xendit's invoice is.
    right = _webhook(platform, _callback(payment, "PAID", amount=1, paid_amount=1))
    assert right.json() == {"status": "processed"}
    assert _get(platform, payment["id"])["status"] == "paid"


def test_xendit_unreachable_while_verifying_answers_503(platform: Platform) -> None:
    payment = _created(platform)
    before = _own_state(platform, payment)
    platform.supervisor.stop("xendit-sandbox")
    try:
        response = _webhook(platform, _callback(payment, "PAID"))
        assert_problem(response, 503, "payment_provider_unavailable")
        assert response.headers.get("retry-after")
    finally:
        platform.supervisor.start_one("xendit-sandbox")
        platform.supervisor.wait_ready()
    assert _own_state(platform, payment) == before


def test_overdue_payments_are_settled_by_what_xendit_says(platform: Platform) -> None:
    """Xendit does not always send EXPIRED, and a PAID callback may be lost: past their
    expiry, pending payments are read back from Xendit by payment-service's sweep."""
    soon = (datetime.now(UTC) + timedelta(seconds=3)).isoformat()
    unpaid, paid = _created(platform, expiresAt=soon), _created(platform, expiresAt=soon)
    for payment in (unpaid, paid):
        _sandbox(platform, payment, "lose-callbacks").raise_for_status()
    _sandbox(platform, paid, "pay").raise_for_status()
    assert _get(platform, paid["id"])["status"] == "pending"

    expired = eventually(
        lambda: (current := _get(platform, unpaid["id"]))["status"] == "expired" and current,
        timeout=20.0,
    )
    assert expired, _get(platform, unpaid["id"])
    assert _report_statuses(platform, unpaid["id"]) == ["expired"]
    # Recorded paid (then refunded in full: its reference names no participant of
    # group-buying's, see `_paid`).
    settled = _paid(platform, paid)
    [invoice] = _invoices_for(platform, paid["paymentCode"])
    assert datetime.fromisoformat(settled["paidAt"]) == datetime.fromisoformat(invoice["paid_at"])
    assert _report_statuses(platform, paid["id"]) == ["paid"]
    for payment in (unpaid, paid):
        [invoice] = _invoices_for(platform, payment["paymentCode"])
        assert (
            sandbox_webhook_attempts(platform.client("xendit-sandbox"), invoiceId=invoice["id"])
            == []
        )


def test_malformed_callback_is_refused(platform: Platform) -> None:
    payment = _created(platform)
    before = snapshot(platform, "payment")
    callback = _callback(payment, "PAID")
    del callback["external_id"]
    assert_problem(_webhook(platform, callback), 422, "invalid_input")
    assert snapshot(platform, "payment") == before


def test_payments_for_other_than_participants_are_not_reported(platform: Platform) -> None:
    payment = _created(platform, reference=f"order:{uuid.uuid4()}")
    _paid_in_sandbox(platform, payment)
    assert _outbox_reports(platform, payment["id"]) == []


# Expiring on request ---------------------------------------------------------------------------


def test_expire_endpoint_closes_the_invoice(platform: Platform) -> None:
    payment = _created(platform)
    path = f"/api/payments/{payment['id']}/expire"
    headers = _service_headers(platform)
    response = platform.client("payment").post(path, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "expired"
    [invoice] = _invoices_for(platform, payment["paymentCode"])
    assert invoice["status"] == "EXPIRED"
    again = platform.client("payment").post(path, headers=headers)
    assert again.status_code == 200
    assert again.json() == response.json()
    # The sandbox's EXPIRED callback arrives too and changes nothing.
    eventually(
        lambda: any(
            a["delivered"]
            for a in platform.client("xendit-sandbox")
            .get("/sandbox/webhooks", params={"invoiceId": invoice["id"]})
            .json()
        )
    )
    assert _get(platform, payment["id"]) == response.json()
    assert _report_statuses(platform, payment["id"]) == ["expired"]
    assert_problem(
        platform.client("payment").post(f"/api/payments/{uuid.uuid4()}/expire", headers=headers),
        404,
        "payment_not_found",
    )


def test_expire_after_the_buyer_paid_records_the_payment(platform: Platform) -> None:
    """The buyer paid a moment before the session closed, the callback not yet arrived:
    Xendit refuses the expiry, and the payment is recorded paid, not expired."""
    platform.supervisor.stop("payment")
    try:
        platform.supervisor.start_one("payment")
        platform.supervisor.wait_ready()
        payment = _created(platform, user_id=platform.new_buyer().id)
        # Pay while payment-service cannot hear the callback, so only the expiry tells it.
        platform.supervisor.stop("payment")
        _sandbox(platform, payment, "pay").raise_for_status()
    finally:
        platform.supervisor.start_one("payment")
        platform.supervisor.wait_ready()
    refused = platform.client("payment").post(
        f"/api/payments/{payment['id']}/expire", headers=_service_headers(platform)
    )
    assert_problem(refused, 409, "payment_already_paid")
    _paid(platform, payment)
    assert _report_statuses(platform, payment["id"]) == ["paid"]
    _given_back_once(platform, payment)


# Reading ---------------------------------------------------------------------------------------


def _list(platform: Platform, headers: dict[str, str], **params: Any) -> httpx.Response:
    return platform.client("payment").get("/api/payments", params=params, headers=headers)


def test_a_buyer_sees_only_their_own_payments(platform: Platform) -> None:
    owner, other = platform.new_buyer(), platform.new_buyer()
    first = _created(platform, user_id=owner.id)
    second = _created(platform, user_id=owner.id)
    theirs = _created(platform, user_id=other.id)
    payments = platform.client("payment")

    assert payments.get(f"/api/payments/{first['id']}", headers=owner.headers).json() == first
    assert_problem(
        payments.get(f"/api/payments/{first['id']}", headers=other.headers),
        404,
        "payment_not_found",
    )
    assert_problem(payments.get(f"/api/payments/{first['id']}"), 401)

    mine = _list(platform, owner.headers)
    assert mine.status_code == 200, mine.text
    assert [p["id"] for p in mine.json()["items"]] == [second["id"], first["id"]]
    assert mine.json()["total"] == 2
    assert [p["id"] for p in _list(platform, other.headers).json()["items"]] == [theirs["id"]]
    assert_problem(_list(platform, owner.headers, userId=other.id), 403)
    assert _list(platform, owner.headers, userId=owner.id).json()["total"] == 2
    assert_problem(_list(platform, {}), 401)

    page = _list(platform, owner.headers, limit=1, offset=1).json()
    assert ([p["id"] for p in page["items"]], page["total"]) == ([first["id"]], 2)

    # Codes are for the platform, not for buyers.
    by_code = f"/api/payments/by-code/{first['paymentCode']}"
    assert_problem(payments.get(by_code, headers=owner.headers), 403)
    assert payments.get(by_code, headers=admin_headers(platform)).json() == first
    assert payments.get(by_code, headers=_service_headers(platform)).json() == first
    assert_problem(
        payments.get("/api/payments/by-code/PAY-FFFFFFFFFFFF", headers=admin_headers(platform)),
        404,
        "payment_not_found",
    )


def test_admin_lists_every_payment_with_filters(platform: Platform) -> None:
    buyer: Account = platform.new_buyer()
    pending = _created(platform, user_id=buyer.id)
    # Named for no participant: group-buying is not told, so it stays paid.
    paid = _paid_in_sandbox(
        platform, _created(platform, user_id=buyer.id, reference=f"order:{uuid.uuid4()}")
    )

    everyone = _list(platform, admin_headers(platform), limit=100).json()
    assert everyone["total"] >= 2
    by_buyer = _list(platform, admin_headers(platform), userId=buyer.id).json()
    assert [p["id"] for p in by_buyer["items"]] == [paid["id"], pending["id"]]
    only_paid = _list(platform, admin_headers(platform), userId=buyer.id, status="paid").json()
    assert [p["id"] for p in only_paid["items"]] == [paid["id"]]
    every_paid = _list(platform, admin_headers(platform), status="paid", limit=100).json()["items"]
    assert every_paid and all(p["status"] == "paid" for p in every_paid)
    assert_problem(_list(platform, admin_headers(platform), status="lost"), 422)
    assert_problem(_list(platform, admin_headers(platform), limit=0), 422)
