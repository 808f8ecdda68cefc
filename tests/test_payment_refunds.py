"""payment-service closing group buys in bulk: refunds into buyers' wallets (the seed's "Tier
Refund Calculation"), escrow released, unpaid payments expired with their sandbox invoices.
Every call changes all the payments it names or none, and repeating it changes nothing."""

import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import httpx
import pytest

from laku.testing.platform import Platform, bearer
from tests.payments import (
    REFUNDS,
    RELEASE,
    WRITERS_TO_PAYMENT,
    credited,
    paid_payment,
    pay_in_sandbox,
    payment_by_id,
    pending_payment,
    post_payments,
    post_refunds,
    refund_item,
    refunds_made,
    refunds_settled,
)
from tests.support import (
    assert_problem,
    balance,
    eventually,
    outbox_marks,
    outboxes_done,
    outboxes_idle,
    snapshot,
    wallet_transactions,
)

EXPIRE_BULK = "/api/payments/expire-bulk"
T = TypeVar("T")


@pytest.fixture(scope="module")
def service_headers(platform: Platform) -> dict[str, str]:
    """As group-buying's closer calls: with a `service` token."""
    return platform.service_headers("group-buying")


def _release(payment_ids: list[str]) -> dict[str, Any]:
    """A release body: the payments of one group buy, released to its factory."""
    return {
        "paymentIds": payment_ids,
        "factoryId": str(uuid.uuid4()),
        "groupSessionId": str(uuid.uuid4()),
    }


def _reports(platform: Platform, payment_id: str) -> list[str]:
    """The statuses payment-service queued for group-buying about one payment."""
    rows = platform.sql(
        "SELECT payload->>'status' AS status FROM payment.outbox "
        "WHERE kind = 'report_payment_event' AND payload->>'paymentId' = $1 ORDER BY id",
        payment_id,
    )
    return [row["status"] for row in rows]


# Refunds (seed step 5, "Tier Refund Calculation") ---------------------------------------------


def test_tier_refund_reaches_the_buyers_wallet_once(
    platform: Platform, service_headers: dict[str, str]
) -> None:
    """Paid 5 x Rp 95,000 at the 25% tier; the group closed at the 100% tier (Rp 65,000), so
    5 x (95,000 - 65,000) = Rp 150,000 goes back into the buyer's wallet."""
    marks = outbox_marks(platform)
    buyer = platform.new_buyer()
    payment = paid_payment(platform, service_headers, buyer.id, 5 * 95_000)
    assert (payment["amount"], payment["escrowStatus"]) == (475_000, "held")
    before = balance(platform, buyer)
    session_id, participant_id = uuid.uuid4(), uuid.uuid4()
    refund = refund_item(
        payment,
        5 * (95_000 - 65_000),
        reference=f"session:{session_id}:participant:{participant_id}",
    )

    assert refunds_made(platform, service_headers, refund) == {
        "refunded": 1,
        "alreadyRefunded": 0,
        "amount": 150_000,
    }
    partly = payment_by_id(platform, service_headers, payment["id"])
    assert (partly["status"], partly["escrowStatus"], partly["refundedAmount"]) == (
        "paid",
        "held",
        150_000,
    )
    [credit] = credited(platform, buyer, before + 150_000)
    assert (credit["direction"], credit["amount"], credit["reason"]) == (
        "credit",
        150_000,
        "tier_refund",
    )
    assert credit["reference"] == refund["reference"]
    assert f"session:{session_id}" in credit["reference"]
    refunds_settled(platform, [refund["reference"]])

    # The same reference again (a closer re-run after a crash) refunds nothing twice. Compared
    # on this payment and wallet only: other tests' invoices expire in the background meanwhile.
    payment_before = payment_by_id(platform, service_headers, payment["id"])
    transactions_before = wallet_transactions(platform, buyer)
    assert refunds_made(platform, service_headers, refund) == {
        "refunded": 0,
        "alreadyRefunded": 1,
        "amount": 0,
    }
    outboxes_done(platform, marks)  # a credit, were one queued, has been made
    assert payment_by_id(platform, service_headers, payment["id"]) == payment_before
    assert wallet_transactions(platform, buyer) == transactions_before
    assert balance(platform, buyer) == before + 150_000


def test_a_full_refund_refunds_the_payment_and_its_escrow(
    platform: Platform, service_headers: dict[str, str]
) -> None:
    buyer = platform.new_buyer()
    payment = paid_payment(platform, service_headers, buyer.id, 285_000)
    refund = refund_item(payment, 285_000, "group_failed")
    assert refunds_made(platform, service_headers, refund)["amount"] == 285_000
    refunded = payment_by_id(platform, service_headers, payment["id"])
    assert (refunded["status"], refunded["escrowStatus"], refunded["refundedAmount"]) == (
        "refunded",
        "refunded",
        285_000,
    )
    [credit] = credited(platform, buyer, 285_000)
    assert (credit["amount"], credit["reason"], credit["reference"]) == (
        285_000,
        "group_failed_refund",
        refund["reference"],
    )
    # Refunded in whole, there is nothing left to refund or release.
    assert_problem(
        post_refunds(platform, service_headers, refund_item(payment, 1)),
        409,
        "payment_not_refundable",
    )
    assert_problem(
        post_payments(platform, RELEASE, _release([payment["id"]]), service_headers),
        409,
        "escrow_not_held",
    )


def test_partial_then_the_rest(platform: Platform, service_headers: dict[str, str]) -> None:
    buyer = platform.new_buyer()
    payment = paid_payment(platform, service_headers, buyer.id)
    first = refund_item(payment, 100_000)
    rest = refund_item(payment, 375_000, "group_cancelled")
    refunds_made(platform, service_headers, first)
    assert payment_by_id(platform, service_headers, payment["id"])["status"] == "paid"
    refunds_made(platform, service_headers, rest)
    done = payment_by_id(platform, service_headers, payment["id"])
    assert (done["status"], done["escrowStatus"], done["refundedAmount"]) == (
        "refunded",
        "refunded",
        475_000,
    )
    transactions = credited(platform, buyer, 475_000)
    assert sorted((t["amount"], t["reason"]) for t in transactions) == [
        (100_000, "tier_refund"),
        (375_000, "session_cancelled_refund"),
    ]


def test_a_refund_beyond_the_payment_refuses_the_whole_batch(
    platform: Platform, service_headers: dict[str, str]
) -> None:
    buyer = platform.new_buyer()
    payment = paid_payment(platform, service_headers, buyer.id)
    other = paid_payment(platform, service_headers, buyer.id)
    earlier = refund_item(payment, 400_000)
    refunds_made(platform, service_headers, earlier)
    refunds_settled(platform, [earlier["reference"]])
    before = snapshot(platform, "payment")

    fine = refund_item(other, 10_000)
    assert_problem(
        post_refunds(platform, service_headers, fine, refund_item(payment, 75_001)),
        409,
        "refund_exceeds_payment",
    )
    # Two items within what is left one by one, but not together.
    assert_problem(
        post_refunds(
            platform, service_headers, refund_item(payment, 50_000), refund_item(payment, 25_001)
        ),
        409,
        "refund_exceeds_payment",
    )
    assert_problem(
        post_refunds(platform, service_headers, refund_item(other, 475_001)),
        409,
        "refund_exceeds_payment",
    )
    assert snapshot(platform, "payment") == before
    # What is left is exactly refundable.
    assert (
        refunds_made(platform, service_headers, fine, refund_item(payment, 75_000))["amount"]
        == 85_000
    )


def test_unpaid_unknown_or_reused_refuse_the_whole_batch(
    platform: Platform, service_headers: dict[str, str]
) -> None:
    buyer = platform.new_buyer()
    paid = paid_payment(platform, service_headers, buyer.id)
    pending = pending_payment(platform, service_headers, buyer.id)
    earlier = refund_item(paid, 10_000)
    refunds_made(platform, service_headers, earlier)
    refunds_settled(platform, [earlier["reference"]])
    before = snapshot(platform, "payment")
    fine = refund_item(paid, 5_000)

    assert_problem(
        post_refunds(platform, service_headers, fine, refund_item(pending, 5_000)),
        409,
        "payment_not_refundable",
    )
    missing = post_refunds(
        platform, service_headers, fine, refund_item({"id": str(uuid.uuid4())}, 5_000)
    )
    assert_problem(missing, 404, "payment_not_found")
    for reused in ({**earlier, "amount": 10_001}, {**earlier, "reason": "group_failed"}):
        assert_problem(
            post_refunds(platform, service_headers, fine, reused), 409, "refund_reference_reused"
        )
    assert snapshot(platform, "payment") == before


def test_the_same_batch_twice_at_once_refunds_once(
    platform: Platform, service_headers: dict[str, str]
) -> None:
    buyer = platform.new_buyer()
    payments = [paid_payment(platform, service_headers, buyer.id, 100_000) for _ in range(3)]
    items = [refund_item(payment, 40_000) for payment in payments]

    def send(_: int) -> httpx.Response:
        with httpx.Client(base_url=platform.url("payment"), timeout=10.0) as client:
            return client.post(REFUNDS, json={"items": items}, headers=service_headers)

    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = [response.json() for response in pool.map(send, range(4))]
    assert sorted(a["refunded"] for a in answers) == [0, 0, 0, 3], answers
    assert sum(a["amount"] for a in answers) == 120_000
    assert len(credited(platform, buyer, 120_000)) == 3
    refunded = [
        payment_by_id(platform, service_headers, p["id"])["refundedAmount"] for p in payments
    ]
    assert refunded == [40_000] * 3


def test_two_thousand_refunds_in_one_call_credit_every_wallet(
    platform: Platform, service_headers: dict[str, str]
) -> None:
    """A chunk as large as allowed: 2,000 participants of 300 buyers. The paid payments are
    written straight into the database: making 2,000 through the sandbox would only be slow."""
    buyers = [uuid.uuid4() for _ in range(300)]
    payment_ids = [uuid.uuid4() for _ in range(2_000)]
    owners = [buyers[i % len(buyers)] for i in range(len(payment_ids))]
    platform.sql(
        "INSERT INTO payment.payments (id, payment_code, reference, user_id, amount, description,"
        " status, escrow_status, xendit_invoice_id, invoice_url, expires_at, paid_at) "
        "SELECT id, 'PAY-T' || substr(md5(id::text), 1, 11), 'participant:' || id, user_id,"
        " 475000, 'bulk', 'paid', 'held', 'inv-' || id, 'http://invoice/' || id,"
        " now() + interval '1 day', now() "
        "FROM unnest($1::uuid[], $2::uuid[]) AS p(id, user_id)",
        payment_ids,
        owners,
    )
    items = [
        {
            "paymentId": str(payment_id),
            "amount": 30_000 + i,
            "reason": "tier_refund",
            "reference": f"session:{uuid.uuid4()}:participant:{payment_id}",
        }
        for i, payment_id in enumerate(payment_ids)
    ]
    expected: dict[uuid.UUID, int] = {buyer: 0 for buyer in buyers}
    for owner, item in zip(owners, items, strict=True):
        expected[owner] += item["amount"]

    answer = refunds_made(platform, service_headers, *items)
    assert answer == {"refunded": 2_000, "alreadyRefunded": 0, "amount": sum(expected.values())}
    refunds_settled(platform, [item["reference"] for item in items])
    balances = {
        row["user_id"]: row["balance"]
        for row in platform.sql(
            "SELECT user_id, balance FROM wallet.user_wallets WHERE user_id = ANY($1::uuid[])",
            buyers,
        )
    }
    assert balances == expected

    released = post_payments(
        platform, RELEASE, _release([str(p) for p in payment_ids]), service_headers
    )
    assert released.status_code == 200, released.text
    assert released.json() == {
        "released": 2_000,
        "alreadyReleased": 0,
        "amount": 2_000 * 475_000 - sum(expected.values()),
    }


# Escrow release ----------------------------------------------------------------------------------


def test_escrow_release_once_and_all_or_nothing(
    platform: Platform, service_headers: dict[str, str]
) -> None:
    buyer = platform.new_buyer()
    whole = paid_payment(platform, service_headers, buyer.id)
    partly_refunded = paid_payment(platform, service_headers, buyer.id)
    pending = pending_payment(platform, service_headers, buyer.id)
    refund = refund_item(partly_refunded, 150_000)
    refunds_made(platform, service_headers, refund)
    refunds_settled(platform, [refund["reference"]])
    ids = [whole["id"], partly_refunded["id"]]

    before = snapshot(platform, "payment")
    refused = post_payments(platform, RELEASE, _release([*ids, pending["id"]]), service_headers)
    assert pending["id"] in assert_problem(refused, 409, "escrow_not_held")["detail"]
    missing = post_payments(platform, RELEASE, _release([*ids, str(uuid.uuid4())]), service_headers)
    assert_problem(missing, 404, "payment_not_found")
    assert snapshot(platform, "payment") == before

    released = post_payments(platform, RELEASE, _release(ids), service_headers)
    assert released.status_code == 200, released.text
    assert released.json() == {
        "released": 2,
        "alreadyReleased": 0,
        "amount": 475_000 + 325_000,
    }
    for payment_id in ids:
        payment = payment_by_id(platform, service_headers, payment_id)
        assert (payment["status"], payment["escrowStatus"]) == ("paid", "released")
        assert payment["escrowReleasedAt"] is not None

    unchanged = snapshot(platform, "payment")
    again = post_payments(platform, RELEASE, _release(ids), service_headers)
    assert again.json() == {"released": 0, "alreadyReleased": 2, "amount": 0}
    assert snapshot(platform, "payment") == unchanged
    # Released escrow is the factory's: nothing of it can be refunded any more.
    assert_problem(
        post_refunds(platform, service_headers, refund_item(whole, 1_000)),
        409,
        "payment_not_refundable",
    )


# Expiring in bulk -----------------------------------------------------------------------------


def test_expire_bulk_expires_pending_ones_and_their_invoices(
    platform: Platform, service_headers: dict[str, str]
) -> None:
    buyer = platform.new_buyer()
    pending = [pending_payment(platform, service_headers, buyer.id) for _ in range(3)]
    paid = paid_payment(platform, service_headers, buyer.id)
    expired_before = pending_payment(platform, service_headers, buyer.id)
    first = post_payments(
        platform, EXPIRE_BULK, {"paymentIds": [expired_before["id"]]}, service_headers
    ).json()
    assert first == {"expired": 1, "alreadyExpired": 0, "alreadyPaid": 0}
    ids = [p["id"] for p in [*pending, paid, expired_before]]

    response = post_payments(platform, EXPIRE_BULK, {"paymentIds": ids}, service_headers)
    assert response.status_code == 200, response.text
    assert response.json() == {"expired": 3, "alreadyExpired": 1, "alreadyPaid": 1}
    for payment in pending:
        expired = payment_by_id(platform, service_headers, payment["id"])
        assert (expired["status"], expired["escrowStatus"]) == ("expired", "none")
    assert payment_by_id(platform, service_headers, paid["id"])["status"] == "paid"

    # Xendit's invoices are closed shortly after, so nobody can pay them any more.
    codes = {p["paymentCode"] for p in [*pending, expired_before]}

    def invoices_expired_and_told() -> bool | None:
        sandbox = platform.client("xendit-sandbox")
        invoices = [i for i in sandbox.get("/sandbox/invoices").json() if i["external_id"] in codes]
        told = {
            attempt["invoiceId"]
            for attempt in sandbox.get("/sandbox/webhooks").json()
            if attempt["delivered"] and attempt["status"] == "EXPIRED"
        }
        done = [i["status"] == "EXPIRED" and i["id"] in told for i in invoices]
        return True if done == [True] * 4 else None

    eventually(invoices_expired_and_told)
    invoice_id = pending[0]["invoiceUrl"].rsplit("/", 1)[-1]
    paying = platform.client("xendit-sandbox").post(f"/sandbox/invoices/{invoice_id}/pay")
    assert paying.status_code == 409
    # The closer asked for these expiries: group-buying is not told of them.
    for payment in [*pending, expired_before]:
        assert _reports(platform, payment["id"]) == []

    unchanged = snapshot(platform, "payment")
    again = post_payments(platform, EXPIRE_BULK, {"paymentIds": ids}, service_headers)
    assert again.json() == {"expired": 0, "alreadyExpired": 4, "alreadyPaid": 1}
    assert snapshot(platform, "payment") == unchanged
    missing = post_payments(
        platform, EXPIRE_BULK, {"paymentIds": [*ids, str(uuid.uuid4())]}, service_headers
    )
    assert_problem(missing, 404, "payment_not_found")


def test_paid_just_before_the_bulk_expiry_is_recorded_paid(
    platform: Platform, service_headers: dict[str, str]
) -> None:
    """The buyer paid, but the callback had not arrived when the closer expired the payment:
    Xendit refuses to close the paid invoice, and the payment is recorded paid after all (and
    reported, so group-buying refunds the cancelled participant)."""
    buyer = platform.new_buyer()
    # A participant's, so reported. group-buying knows no such participant and would have its
    # money given back at once: it is down until the end, its reports waiting in the outbox.
    platform.supervisor.stop("group-buying")
    try:
        payment = pay_in_sandbox(
            platform,
            service_headers,
            pending_payment(
                platform, service_headers, buyer.id, reference=f"participant:{uuid.uuid4()}"
            ),
        )
        # Back to what payment-service knew before the callback.
        platform.sql(
            "UPDATE payment.payments SET status = 'pending', escrow_status = 'none', "
            "paid_at = NULL WHERE id = $1",
            uuid.UUID(payment["id"]),
        )
        response = post_payments(
            platform, EXPIRE_BULK, {"paymentIds": [payment["id"]]}, service_headers
        )
        assert response.json() == {"expired": 1, "alreadyExpired": 0, "alreadyPaid": 0}
        recorded = eventually(
            lambda: (
                p
                if (p := payment_by_id(platform, service_headers, payment["id"]))["status"]
                == "paid"
                else None
            )
        )
        assert recorded["escrowStatus"] == "held"
        assert recorded["paidAt"] == payment["paidAt"]
        assert _reports(platform, payment["id"]) == ["paid", "paid"]
    finally:
        platform.supervisor.start_one("group-buying")
        platform.supervisor.wait_ready()
    # Told of it, group-buying knows no such participant: the money goes back, once.
    refunded = eventually(
        lambda: (
            p
            if (p := payment_by_id(platform, service_headers, payment["id"]))["status"]
            == "refunded"
            else None
        ),
        timeout=40,
    )
    assert refunded["refundedAmount"] == refunded["amount"]
    # Credited to the wallet before the next test looks at the tables.
    assert eventually(
        lambda: (
            platform.sql(
                "SELECT 1 FROM payment.refunds WHERE payment_id = $1 AND status = 'succeeded'",
                uuid.UUID(payment["id"]),
            )
            or None
        )
    )


def test_expire_bulk_waits_for_a_creation_in_flight_and_fails_an_abandoned_one(
    platform: Platform, service_headers: dict[str, str]
) -> None:
    """A payment pending without its invoice is being created: its invoice may reach the buyer
    any moment, so the whole call is refused (retry shortly). Once clearly abandoned (its
    process died before recording the invoice), nobody can pay it and it is failed."""
    buyer = platform.new_buyer()
    other = pending_payment(platform, service_headers, buyer.id)
    in_flight = uuid.uuid4()
    platform.sql(
        "INSERT INTO payment.payments (id, payment_code, reference, user_id, amount, "
        "description, status, expires_at) VALUES ($1, $2, $3, $4, 475000, 'in flight', "
        "'pending', now() + interval '1 day')",
        in_flight,
        f"PAY-F{in_flight.hex[:11].upper()}",
        f"participant:{uuid.uuid4()}",
        uuid.UUID(buyer.id),
    )
    ids = [other["id"], str(in_flight)]
    before = snapshot(platform, "payment")
    refused = post_payments(platform, EXPIRE_BULK, {"paymentIds": ids}, service_headers)
    assert_problem(refused, 409, "payment_in_progress")
    assert refused.headers["retry-after"] == "1"
    assert snapshot(platform, "payment") == before

    platform.sql(
        "UPDATE payment.payments SET updated_at = now() - interval '3 minutes' WHERE id = $1",
        in_flight,
    )
    response = post_payments(platform, EXPIRE_BULK, {"paymentIds": ids}, service_headers)
    assert response.json() == {"expired": 2, "alreadyExpired": 0, "alreadyPaid": 0}
    assert payment_by_id(platform, service_headers, str(in_flight))["status"] == "failed"
    assert payment_by_id(platform, service_headers, other["id"])["status"] == "expired"


# Access and input --------------------------------------------------------------------------------


def test_only_services_and_admins_close(
    platform: Platform, service_headers: dict[str, str]
) -> None:
    buyer = platform.new_buyer()
    payment = paid_payment(platform, service_headers, buyer.id)
    pending = pending_payment(platform, service_headers, buyer.id)
    calls = [
        (REFUNDS, {"items": [refund_item(payment, 1_000)]}),
        (RELEASE, _release([payment["id"]])),
        (EXPIRE_BULK, {"paymentIds": [pending["id"]]}),
    ]
    before = snapshot(platform, "payment")
    for path, body in calls:
        assert_problem(post_payments(platform, path, body, {}), 401)
        assert_problem(post_payments(platform, path, body, bearer("not-a-token")), 401)
        assert_problem(post_payments(platform, path, body, buyer.headers), 403)
    assert snapshot(platform, "payment") == before
    admin = bearer(platform.admin_token)
    assert post_payments(platform, REFUNDS, calls[0][1], admin).status_code == 201
    assert post_payments(platform, RELEASE, calls[1][1], admin).status_code == 200


def _a_payment_id() -> str:
    return str(uuid.uuid4())


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (REFUNDS, {"items": []}),
        (REFUNDS, {}),
        (REFUNDS, {"items": [{"amount": 1}]}),
        (REFUNDS, {"items": [refund_item({"id": _a_payment_id()}, 0)]}),
        (REFUNDS, {"items": [refund_item({"id": _a_payment_id()}, -5)]}),
        (REFUNDS, {"items": [refund_item({"id": _a_payment_id()}, 1.5)]}),
        (REFUNDS, {"items": [refund_item({"id": _a_payment_id()}, "1000")]}),
        (REFUNDS, {"items": [refund_item({"id": _a_payment_id()}, 1_000, "goodwill")]}),
        (REFUNDS, {"items": [refund_item({"id": _a_payment_id()}, 1_000, reference="has spaces")]}),
        (REFUNDS, {"items": [refund_item({"id": "not-a-uuid"}, 1_000)]}),
        (REFUNDS, {"items": [refund_item({"id": _a_payment_id()}, 1_000, currency="USD")]}),
        (REFUNDS, {"items": [refund_item({"id": _a_payment_id()}, 1_000, reference="same")] * 2}),
        (REFUNDS, {"items": [refund_item({"id": _a_payment_id()}, 1_000) for _ in range(2_001)]}),
        (RELEASE, _release([])),
        (RELEASE, _release(["not-a-uuid"])),
        (RELEASE, _release([_a_payment_id()] * 2)),
        (RELEASE, _release([_a_payment_id() for _ in range(5_001)])),
        (RELEASE, {"paymentIds": [_a_payment_id()]}),
        (RELEASE, {**_release([_a_payment_id()]), "factoryId": "not-a-uuid"}),
        (EXPIRE_BULK, {"paymentIds": []}),
        (EXPIRE_BULK, {"paymentIds": "everything"}),
        (EXPIRE_BULK, {"paymentIds": [_a_payment_id() for _ in range(5_001)]}),
    ],
)
def test_invalid_input_is_refused_and_changes_nothing(
    platform: Platform, service_headers: dict[str, str], path: str, body: dict
) -> None:
    # Nothing another test queued (a refund still being credited) changes the schema meanwhile.
    outboxes_idle(platform, *WRITERS_TO_PAYMENT)
    before = snapshot(platform, "payment")
    assert_problem(post_payments(platform, path, body, service_headers), 422, "invalid_input")
    assert snapshot(platform, "payment") == before
