"""Typed client other services use to call payment-service (group-buying: the escrow payment of
a join, read back its status, expire its invoice when the session closes first; and closing a
group buy in bulk: refunds into wallets, escrow release, expiring the unpaid invoices)."""

import uuid
from collections.abc import Sequence

from laku.core.http import ServiceClient
from laku.payment.schemas import (
    MAX_PAYMENTS_PER_CALL,
    MAX_REFUNDS_PER_CALL,
    EscrowRelease,
    EscrowReleaseOut,
    EscrowStatus,
    PaymentCreate,
    PaymentOut,
    PaymentsExpire,
    PaymentsExpireOut,
    PaymentStatus,
    RefundItem,
    RefundReason,
    RefundsCreate,
    RefundsOut,
)

__all__ = [
    "MAX_PAYMENTS_PER_CALL",
    "MAX_REFUNDS_PER_CALL",
    "EscrowReleaseOut",
    "EscrowStatus",
    "PaymentClient",
    "PaymentCreate",
    "PaymentOut",
    "PaymentStatus",
    "PaymentsExpireOut",
    "RefundItem",
    "RefundReason",
    "RefundsOut",
]


class PaymentClient(ServiceClient):
    async def create_payment(self, request: PaymentCreate, *, idempotency_key: str) -> PaymentOut:
        """Create the payment and its Xendit invoice (`invoiceUrl` is where the buyer pays).
        The same `reference` again returns the first payment, never a second invoice. Xendit
        unreachable (503, retried here first) raises UpstreamUnavailable; calling again later
        with the same reference is safe."""
        response = await self.request(
            "POST",
            "/api/payments",
            json=request.model_dump(mode="json", by_alias=True, exclude_none=True),
            idempotency_key=idempotency_key,
        )
        return PaymentOut.model_validate(response.json())

    async def get_payment(self, payment_id: uuid.UUID) -> PaymentOut | None:
        return await self.get_or_none(f"/api/payments/{payment_id}", PaymentOut)

    async def expire_payment(self, payment_id: uuid.UUID, *, idempotency_key: str) -> PaymentOut:
        """Close the invoice so it can no longer be paid; a payment already expired is returned
        as it is. A paid one raises ServiceCallError 409 `payment_already_paid`."""
        response = await self.request(
            "POST", f"/api/payments/{payment_id}/expire", idempotency_key=idempotency_key
        )
        return PaymentOut.model_validate(response.json())

    async def refund(self, items: Sequence[RefundItem], *, idempotency_key: str) -> RefundsOut:
        """Refund up to MAX_REFUNDS_PER_CALL items (send a larger group in chunks) from paid
        payments whose escrow is held into their buyers' wallets; the wallet is credited
        shortly after, through the outbox. A `reference` is refunded once: again, it counts as
        `alreadyRefunded`. The whole call is refused with ServiceCallError 409 and nothing
        changes if any payment is not paid with escrow held (`payment_not_refundable`), an
        amount exceeds what is left of its payment (`refund_exceeds_payment`) or a reference
        was used for another refund (`refund_reference_reused`); 404 `payment_not_found`."""
        body = RefundsCreate(items=list(items)).model_dump(mode="json", by_alias=True)
        response = await self.request(
            "POST", "/api/payments/refunds", json=body, idempotency_key=idempotency_key
        )
        return RefundsOut.model_validate(response.json())

    async def release_escrow(
        self, payment_ids: Sequence[uuid.UUID], *, idempotency_key: str
    ) -> EscrowReleaseOut:
        """Release the escrow of up to MAX_PAYMENTS_PER_CALL paid payments (what was paid less
        what was refunded goes to the factory's side). Already released counts as
        `alreadyReleased`; any payment whose escrow is not held refuses the whole call with
        ServiceCallError 409 `escrow_not_held`, nothing released."""
        body = EscrowRelease(payment_ids=list(payment_ids)).model_dump(mode="json", by_alias=True)
        response = await self.request(
            "POST", "/api/payments/escrow/release", json=body, idempotency_key=idempotency_key
        )
        return EscrowReleaseOut.model_validate(response.json())

    async def expire_many(
        self, payment_ids: Sequence[uuid.UUID], *, idempotency_key: str
    ) -> PaymentsExpireOut:
        """Expire up to MAX_PAYMENTS_PER_CALL pending payments at once; their invoices are
        closed at Xendit shortly after, and these expiries are not reported back to
        group-buying. Paid ones are left as they are and counted as `alreadyPaid` (the caller
        decides); if a buyer pays in the moment before Xendit closes the invoice, the payment
        is recorded paid after all and reported to group-buying as paid. One still being
        created refuses the whole call with ServiceCallError 409 `payment_in_progress` (retry
        a second later)."""
        body = PaymentsExpire(payment_ids=list(payment_ids)).model_dump(mode="json", by_alias=True)
        response = await self.request(
            "POST", "/api/payments/expire-bulk", json=body, idempotency_key=idempotency_key
        )
        return PaymentsExpireOut.model_validate(response.json())
