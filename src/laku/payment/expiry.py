"""Expiring a closed group buy's unpaid payments in bulk: recorded expired at once, their
invoices closed at Xendit afterwards by the outbox (`Payments.close_invoice_of_expired`)."""

import uuid
from collections.abc import Sequence

import structlog
from sqlalchemy import func, literal, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from laku.payment.bulk import among, locked
from laku.payment.models import Payment, outbox
from laku.payment.payments import PaymentInProgress
from laku.payment.rules import ABANDONED_AFTER, PaymentStatus
from laku.payment.schemas import PaymentsExpireOut
from laku.payment.tasks import EXPIRE_INVOICE

log = structlog.get_logger()


async def expire_many(session: AsyncSession, payment_ids: Sequence[uuid.UUID]) -> PaymentsExpireOut:
    """Record pending payments expired and enqueue the closing of each invoice at Xendit, then
    commit. Not reported to group-buying: its closer asked for these expiries."""
    payments = await locked(
        session,
        payment_ids,
        Payment.status,
        Payment.xendit_invoice_id,
        (Payment.updated_at < func.now() - ABANDONED_AFTER).label("abandoned"),
    )
    pending = [row for row in payments.values() if row.status == PaymentStatus.PENDING]
    if any(row.xendit_invoice_id is None and not row.abandoned for row in pending):
        # Its invoice may be created (and handed to the buyer) at any moment.
        raise PaymentInProgress("A payment's invoice is being created", retry_after=1)
    invoiced = [row.id for row in pending if row.xendit_invoice_id is not None]
    # A creation that died before its invoice was recorded: no buyer has that invoice's URL,
    # so failing the payment closes it (a retry of the creation could take it over).
    abandoned = [row.id for row in pending if row.xendit_invoice_id is None]
    if invoiced:
        await session.execute(
            update(Payment)
            .where(among(Payment.id, invoiced))
            .values(status=PaymentStatus.EXPIRED.value, expired_at=func.now())
            .execution_options(synchronize_session=False)
        )
        await session.execute(
            outbox.insert().from_select(
                ["kind", "payload"],
                select(
                    literal(EXPIRE_INVOICE),
                    func.jsonb_build_object(
                        "paymentId", Payment.id, "invoiceId", Payment.xendit_invoice_id
                    ),
                ).where(among(Payment.id, invoiced)),
            )
        )
    if abandoned:
        await session.execute(
            update(Payment)
            .where(among(Payment.id, abandoned))
            .values(status=PaymentStatus.FAILED.value)
            .execution_options(synchronize_session=False)
        )
    await session.commit()
    closed_before = (PaymentStatus.EXPIRED, PaymentStatus.FAILED)
    already_expired = sum(row.status in closed_before for row in payments.values())
    log.info("payments_expired", invoiced=len(invoiced), abandoned=len(abandoned))
    return PaymentsExpireOut(
        expired=len(pending),
        already_expired=already_expired,
        already_paid=len(payments) - len(pending) - already_expired,
    )
