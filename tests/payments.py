"""payment-service's bulk calls as group-buying's closer makes them (refunds, escrow release),
the payments they change and the wallet credits they lead to."""

import uuid
from typing import Any

import httpx

from laku.testing.platform import Account, Platform
from tests.support import balance, eventually, wallet_transactions

REFUNDS = "/api/payments/refunds"


RELEASE = "/api/payments/escrow/release"


Payment = dict[str, Any]


def post_payments(
    platform: Platform, path: str, body: Any, headers: dict[str, str]
) -> httpx.Response:
    return platform.client("payment").post(path, json=body, headers=headers)


def payment_by_id(platform: Platform, headers: dict[str, str], payment_id: str) -> Payment:
    response = platform.client("payment").get(f"/api/payments/{payment_id}", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def paid_payment(
    platform: Platform, headers: dict[str, str], user_id: str, amount: int = 475_000
) -> Payment:
    return pay_in_sandbox(platform, headers, pending_payment(platform, headers, user_id, amount))


def refund_item(payment: Payment, amount: int, reason: str = "tier_refund", **fields: Any) -> dict:
    return {
        "paymentId": payment["id"],
        "amount": amount,
        "reason": reason,
        "reference": f"session:{uuid.uuid4()}:participant:{uuid.uuid4()}",
        **fields,
    }


def post_refunds(platform: Platform, headers: dict[str, str], *items: dict) -> httpx.Response:
    return post_payments(platform, REFUNDS, {"items": list(items)}, headers)


def refunds_made(platform: Platform, headers: dict[str, str], *items: dict) -> dict[str, Any]:
    response = post_refunds(platform, headers, *items)
    assert response.status_code == 201, response.text
    return response.json()


def credited(platform: Platform, buyer: Account, expected: int) -> list[dict[str, Any]]:
    """The buyer's transactions once the wallet's balance is `expected` (the relay credits
    shortly after the refund)."""
    eventually(lambda: balance(platform, buyer) == expected)
    return wallet_transactions(platform, buyer)


def refunds_settled(platform: Platform, references: list[str]) -> None:
    """Wait until the wallet has credited these refunds (payment marks them succeeded)."""
    eventually(
        lambda: (
            True
            if [
                row["status"]
                for row in platform.sql(
                    "SELECT status FROM payment.refunds WHERE reference = ANY($1::text[])",
                    references,
                )
            ]
            == ["succeeded"] * len(references)
            else None
        ),
        # Thousands of refunds are credited in chunks, on a machine the suite keeps busy.
        timeout=60,
    )


def pending_payment(
    platform: Platform,
    headers: dict[str, str],
    user_id: str,
    amount: int = 475_000,
    reference: str | None = None,
) -> Payment:
    response = post_payments(
        platform,
        "/api/payments",
        {
            # Named for no participant by default: group-buying, which would have the money
            # of a participant it does not know given back, is not told of these.
            "reference": reference or f"escrow-test:{uuid.uuid4()}",
            "userId": user_id,
            "amount": amount,
            "description": "Premium T-Shirt M x 5",
        },
        headers,
    )
    assert response.status_code == 201, response.text
    return response.json()


def pay_in_sandbox(platform: Platform, headers: dict[str, str], payment: Payment) -> Payment:
    """The buyer pays the invoice; the sandbox's callback makes the payment paid."""
    invoice_id = payment["invoiceUrl"].rsplit("/", 1)[-1]
    platform.client("xendit-sandbox").post(f"/sandbox/invoices/{invoice_id}/pay").raise_for_status()
    return eventually(
        lambda: (
            paid
            if (paid := payment_by_id(platform, headers, payment["id"]))["status"] == "paid"
            else None
        )
    )


# The services whose deferred work writes to payment's schema (through payment's client), and
# payment's own: what a whole-schema comparison of payment waits for.
WRITERS_TO_PAYMENT = ("payment", "group_buying", "order")
