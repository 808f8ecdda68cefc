"""Typed client other services use to call payment-service (group-buying: the escrow payment of
a join, read back its status, expire its invoice when the session closes first; and closing a
group buy in bulk: refunds into wallets, escrow release, expiring the unpaid invoices;
settlement: what escrow released to a factory in a period)."""

import uuid
from collections.abc import Sequence
from datetime import datetime

from laku.core.audit import AUDIT_PAGE_SIZE, AuditedClient
from laku.payment.rules import EscrowStatus, PaymentStatus, RefundReason
from laku.payment.schemas import (
    MAX_PAYMENTS_PER_CALL,
    MAX_REFUNDS_PER_CALL,
    AuditPaymentOut,
    AuditRefundOut,
    CancelledOrderRefundOut,
    EscrowRelease,
    EscrowReleasedOut,
    EscrowReleaseOut,
    PaymentCreate,
    PaymentOut,
    PaymentsExpire,
    PaymentsExpireOut,
    ReferenceExpiredOut,
    RefundItem,
    RefundsCreate,
    RefundsOut,
    ReleasedSessionOut,
)

__all__ = [
    "MAX_PAYMENTS_PER_CALL",
    "MAX_REFUNDS_PER_CALL",
    "AuditPaymentOut",
    "AuditRefundOut",
    "CancelledOrderRefundOut",
    "EscrowReleaseOut",
    "EscrowReleasedOut",
    "EscrowStatus",
    "PaymentClient",
    "PaymentCreate",
    "PaymentOut",
    "PaymentStatus",
    "PaymentsExpireOut",
    "ReferenceExpiredOut",
    "RefundItem",
    "RefundReason",
    "RefundsOut",
    "ReleasedSessionOut",
]


class PaymentClient(AuditedClient):
    """Its audit: payment-service's own invariant, every payment's paid = held + released +
    refunded."""

    async def create_payment(self, request: PaymentCreate, *, idempotency_key: str) -> PaymentOut:
        """Create the payment and its Xendit invoice (`invoiceUrl` is where the buyer pays).
        The same `reference` again returns the first payment, never a second invoice. Xendit
        unreachable (503, retried here first) raises UpstreamUnavailable; calling again later
        with the same reference is safe."""
        return await self.post_model(
            "/api/payments",
            request,
            PaymentOut,
            idempotency_key=idempotency_key,
            exclude_none=True,
        )

    async def get_payment(self, payment_id: uuid.UUID) -> PaymentOut | None:
        return await self.get_or_none(f"/api/payments/{payment_id}", PaymentOut)

    async def expire_payment(self, payment_id: uuid.UUID, *, idempotency_key: str) -> PaymentOut:
        """Close the invoice so it can no longer be paid; a payment already expired is returned
        as it is. A paid one raises ServiceCallError 409 `payment_already_paid`."""
        return await self.post_model(
            f"/api/payments/{payment_id}/expire", None, PaymentOut, idempotency_key=idempotency_key
        )

    async def expire_by_reference(self, reference: str) -> ReferenceExpiredOut:
        """Give up the payment for `reference`, made or not: its invoice closed, or none ever
        made (a creation arriving later is refused). ServiceCallError 409
        `payment_in_progress` while it is being created (ask again), `payment_already_paid`
        once paid."""
        return await self.post_model(
            f"/api/payments/by-reference/{reference}/expire",
            None,
            ReferenceExpiredOut,
            idempotency_key=f"expire-reference:{reference}",
        )

    async def refund(self, items: Sequence[RefundItem], *, idempotency_key: str) -> RefundsOut:
        """Refund up to MAX_REFUNDS_PER_CALL items (send a larger group in chunks) from paid
        payments whose escrow is held (for `order_cancelled`, held or released) into their
        buyers' wallets; the wallet is credited shortly after, through the outbox. A
        `reference` is refunded once: again, it counts as `alreadyRefunded`. The whole call is
        refused with ServiceCallError 409 and nothing changes if any payment is not
        refundable for its items' reason (`payment_not_refundable`), an amount exceeds what is
        left of its payment (`refund_exceeds_payment`) or a reference was used for another
        refund (`refund_reference_reused`); 404 `payment_not_found`."""
        body = RefundsCreate(items=list(items))
        return await self.post_model(
            "/api/payments/refunds", body, RefundsOut, idempotency_key=idempotency_key
        )

    async def release_escrow(
        self,
        payment_ids: Sequence[uuid.UUID],
        *,
        factory_id: uuid.UUID,
        group_session_id: uuid.UUID,
        idempotency_key: str,
    ) -> EscrowReleaseOut:
        """Release the escrow of up to MAX_PAYMENTS_PER_CALL paid payments of one group buy to
        its factory (what was paid less what was refunded goes to the factory's side, and is
        settled with it). Already released counts as `alreadyReleased`; any payment whose
        escrow is not held refuses the whole call with ServiceCallError 409 `escrow_not_held`,
        nothing released."""
        body = EscrowRelease(
            payment_ids=list(payment_ids), factory_id=factory_id, group_session_id=group_session_id
        )
        return await self.post_model(
            "/api/payments/escrow/release", body, EscrowReleaseOut, idempotency_key=idempotency_key
        )

    async def escrow_released(
        self, factory_id: uuid.UUID, start: datetime, end: datetime
    ) -> EscrowReleasedOut:
        """What escrow released to the factory in [start, end), in total and per group buy,
        less refunds made since (settlement's base)."""
        return await self.get_model(
            "/api/payments/escrow/released",
            EscrowReleasedOut,
            params={"factoryId": str(factory_id), "from": start.isoformat(), "to": end.isoformat()},
        )

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
        body = PaymentsExpire(payment_ids=list(payment_ids))
        return await self.post_model(
            "/api/payments/expire-bulk", body, PaymentsExpireOut, idempotency_key=idempotency_key
        )

    async def audit_payments(
        self, after: str | None, through: str | None, limit: int = AUDIT_PAGE_SIZE
    ) -> list[AuditPaymentOut]:
        """A page of payments by reference (byte order) in (after, through]."""
        return await self.audit_page("payments", AuditPaymentOut, after, through, limit)

    async def audit_refunds(
        self, after: uuid.UUID | None, limit: int = AUDIT_PAGE_SIZE
    ) -> list[AuditRefundOut]:
        """A page of refunds by id after `after`."""
        return await self.audit_page(
            "refunds", AuditRefundOut, str(after) if after else None, None, limit
        )
