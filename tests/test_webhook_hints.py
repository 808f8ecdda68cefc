"""Provider webhooks are hints, not facts (design 10), seen from a buyer's join: a Xendit
callback forged with the right token moves neither the payment nor the participant, and a
payment whose EXPIRED callback never comes still expires, cancelling its participant and
releasing its stock, because payment-service asks Xendit about overdue payments."""

from typing import Any

from laku.testing.catalog import create_seed_catalog
from laku.testing.platform import Platform
from tests.group_buys import (
    invoice_of,
    join_group_buy,
    open_group_buy,
    participants_of,
    payment_of,
    stock_of,
)
from tests.service_logs import wait_logged
from tests.support import eventually, sandbox_webhook_attempts, snapshot


def _callback_headers(platform: Platform) -> dict[str, str]:
    return {"x-callback-token": platform.settings.xendit_callback_token.get_secret_value()}


def _forged_paid(invoice: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """A PAID callback as Xendit would send it for the invoice, had it been paid."""
    return {
        "id": invoice["id"],
        "external_id": invoice["external_id"],
        "user_id": invoice["user_id"],
        "is_high": False,
        "status": "PAID",
        "merchant_name": "Laku",
        "amount": invoice["amount"],
        "paid_amount": invoice["amount"],
        "currency": "IDR",
        "paid_at": "2026-11-25T08:30:00.000Z",
        "payment_method": "BANK_TRANSFER",
        "created": invoice["created"],
        "updated": invoice["updated"],
        **fields,
    }


def test_a_forged_paid_callback_moves_neither_payment_nor_participant(platform: Platform) -> None:
    catalog = create_seed_catalog(platform)
    session = open_group_buy(platform, catalog, target_moq=100)
    joined = join_group_buy(platform, session, catalog.variants["M"], 3, pay=False)
    invoice = invoice_of(platform, joined)
    assert invoice["status"] == "PENDING"
    before = snapshot(platform, "payment", "group_buying")

    for body in (
        _forged_paid(invoice),
        # The seed's form: no invoice id, no amount.
        {
            "external_id": invoice["external_id"],
            "status": "PAID",
            "paid_at": "2025-11-20T15:30:00Z",
        },
        _forged_paid(invoice, id="0" * 24),  # another invoice
        _forged_paid(invoice, amount=1, paid_amount=1),  # another amount
    ):
        response = platform.client("payment").post(
            "/api/payments/webhook", json=body, headers=_callback_headers(platform)
        )
        assert response.status_code == 200, response.text
        assert response.json() == {"status": "ignored"}

    assert snapshot(platform, "payment", "group_buying") == before
    assert payment_of(platform, joined)["status"] == "pending"
    assert participants_of(platform, session["id"])[joined.id]["status"] == "pending_payment"
    assert stock_of(platform, catalog)["M"]["reserved"] == 3
    wait_logged(platform, "payment", "webhook_status_not_confirmed", reported="PAID")
    wait_logged(platform, "payment", "webhook_for_other_invoice", invoice_id="0" * 24)


def test_an_overdue_payment_without_its_expired_callback_cancels_the_participant(
    platform: Platform,
) -> None:
    catalog = create_seed_catalog(platform)
    session = open_group_buy(platform, catalog, target_moq=100)
    joined = join_group_buy(platform, session, catalog.variants["L"], 2, pay=False)
    assert stock_of(platform, catalog)["L"]["reserved"] == 2
    invoice = invoice_of(platform, joined)
    sandbox = platform.client("xendit-sandbox")
    # Xendit lets the invoice run out and never sends EXPIRED.
    assert sandbox.post(f"/sandbox/invoices/{invoice['id']}/lose-callbacks").status_code == 200
    assert sandbox.post(f"/sandbox/invoices/{invoice['id']}/expire").status_code == 200
    assert payment_of(platform, joined)["status"] == "pending"
    # Its expiry date has passed (the clock cannot be moved over HTTP; payment-service keeps
    # the invoice's expiry date as the payment's).
    platform.sql(
        "UPDATE payment.payments SET expires_at = now() - interval '1 second' WHERE id = $1::uuid",
        joined.payment_id,
    )

    expired = eventually(
        lambda: (payment := payment_of(platform, joined))["status"] == "expired" and payment
    )
    assert expired, payment_of(platform, joined)
    cancelled = eventually(
        lambda: (
            (p := participants_of(platform, session["id"])[joined.id])["status"] == "cancelled"
            and p
        )
    )
    assert cancelled, participants_of(platform, session["id"])[joined.id]
    assert cancelled["cancelReason"] == "payment_expired"
    assert eventually(lambda: stock_of(platform, catalog)["L"]["reserved"] == 0)
    assert (
        stock_of(platform, catalog)["L"]["available"]
        == stock_of(platform, catalog)["L"]["quantity"]
    )
    assert sandbox_webhook_attempts(sandbox, invoiceId=invoice["id"]) == []
