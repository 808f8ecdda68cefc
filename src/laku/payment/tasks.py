"""payment's outbox kinds and what each deferred step does.

Each step is delivered until it succeeds and does its work once however often it is retried
(its calls carry idempotency keys); a callee's final refusal dead-letters its row for an admin
(the outbox's rule), and a step that cannot be done yet raises `RetryLater`.
"""

import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from laku.core.db import Database
from laku.core.errors import UpstreamUnavailable
from laku.core.outbox import Handler, RetryLater
from laku.group_buying.client import GroupBuyingClient, PaymentEvent, PaymentEventStatus
from laku.notification.client import NotificationClient
from laku.payment import notices
from laku.payment.bulk import among
from laku.payment.models import Payment, Refund
from laku.payment.rules import RefundReason, RefundStatus
from laku.payment.schemas import RefundsOut
from laku.settlement.client import EscrowRefundsReport, SettlementClient
from laku.wallet.client import MovementCreate, MovementReason, WalletClient

# A payment's move (paid, expired), reported to group-buying.
REPORT_PAYMENT_EVENT = "report_payment_event"
# One wallet credit call per batch of refunds.
CREDIT_REFUNDS = "credit_refunds"
# One Xendit expiry per invoice: Xendit expires invoices one at a time, each retried on its own.
EXPIRE_INVOICE = "expire_invoice"
# Refunds of escrow already released to a factory (a cancelled order), reported to
# settlement-service: the factory may have been settled for that money and then owes it back.
REPORT_ESCROW_REFUNDS = "report_escrow_refunds"

_WALLET_REASONS = {
    RefundReason.TIER_REFUND: MovementReason.TIER_REFUND,
    RefundReason.GROUP_FAILED: MovementReason.GROUP_FAILED_REFUND,
    RefundReason.GROUP_CANCELLED: MovementReason.SESSION_CANCELLED_REFUND,
    RefundReason.ORDER_CANCELLED: MovementReason.ORDER_CANCELLED_REFUND,
    # The wallet knows no reason of its own for it: a whole refund like a failed group's.
    RefundReason.JOIN_FAILED: MovementReason.GROUP_FAILED_REFUND,
}

InvoiceCloser = Callable[[uuid.UUID, str], Awaitable[None]]
UnclaimedRefunder = Callable[[AsyncSession, uuid.UUID], Awaitable[RefundsOut | None]]


@dataclass(frozen=True, kw_only=True)
class PaymentTasks:
    """The handlers of payment's outbox kinds. The two steps that are a workflow's own (closing
    the invoice of a payment expired in bulk, refunding money nobody claims) are given to it
    by the app: their modules enqueue these kinds, so this one does not import them.
    `on_commit` is called after a transaction that enqueued outbox rows."""

    db: Database
    group_buying: GroupBuyingClient
    wallet: WalletClient
    settlements: SettlementClient
    notifications: NotificationClient
    close_invoice: InvoiceCloser
    refund_unclaimed: UnclaimedRefunder
    on_commit: Callable[[], None]

    def handlers(self) -> Mapping[str, Handler]:
        return {
            REPORT_PAYMENT_EVENT: self.report_payment_event,
            CREDIT_REFUNDS: self.credit_refunds,
            EXPIRE_INVOICE: self.expire_invoice,
            REPORT_ESCROW_REFUNDS: self.report_escrow_refunds,
        }

    async def report_payment_event(self, _: int, payload: dict[str, Any]) -> None:
        event = PaymentEvent.model_validate(payload)
        # One key per payment and status: however often this is retried, it is applied once.
        answer = await self.group_buying.report_payment(
            event, idempotency_key=f"payment-event:{event.payment_id}:{event.status}"
        )
        if answer.outcome == "unknown" and event.status == PaymentEventStatus.PAID:
            # Paid for a join group-buying never recorded: nobody else will give it back.
            async with self.db.sessions() as session:
                if await self.refund_unclaimed(session, event.payment_id):
                    self.on_commit()

    async def credit_refunds(self, row_id: int, payload: dict[str, Any]) -> None:
        """Credit a batch of refunds into their buyers' wallets in one call, mark them
        succeeded, then tell the buyers. Each credit's key is its refund's, so a retry credits
        nothing twice (the wallet answers it from its record), and nobody is told twice."""
        refund_ids = [uuid.UUID(refund_id) for refund_id in payload["refundIds"]]
        async with self.db.sessions() as session:
            refunds = (
                await session.execute(
                    select(
                        Refund.id,
                        Refund.amount,
                        Refund.reason,
                        Refund.reference,
                        Payment.user_id,
                        Payment.description,
                    )
                    .join(Payment, Payment.id == Refund.payment_id)
                    .where(among(Refund.id, refund_ids))
                    .order_by(Refund.id)
                )
            ).all()
        credits = [
            MovementCreate(
                user_id=refund.user_id,
                amount=refund.amount,
                reason=_WALLET_REASONS[RefundReason(refund.reason)],
                reference=refund.reference,
                idempotency_key=f"refund:{refund.id}",
            )
            for refund in refunds
        ]
        await self.wallet.credit_bulk(credits, idempotency_key=f"refund-credits:{row_id}")
        async with self.db.sessions.begin() as session:
            await session.execute(
                update(Refund)
                .where(among(Refund.id, refund_ids), Refund.status == RefundStatus.PENDING)
                .values(status=RefundStatus.SUCCEEDED.value)
            )
        await notices.tell_credited(self.notifications, row_id, refunds)

    async def expire_invoice(self, _: int, payload: dict[str, Any]) -> None:
        try:
            await self.close_invoice(uuid.UUID(payload["paymentId"]), payload["invoiceId"])
        except UpstreamUnavailable as exc:  # Xendit could not be asked: later
            raise RetryLater(str(exc)) from exc

    async def report_escrow_refunds(self, row_id: int, payload: dict[str, Any]) -> None:
        # Settlement accounts for each refund once by its id.
        await self.settlements.report_escrow_refunds(
            EscrowRefundsReport.model_validate(payload),
            idempotency_key=f"escrow-refunds:{row_id}",
        )
