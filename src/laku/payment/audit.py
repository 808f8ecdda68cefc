"""payment-service's part of `laku audit`: every payment's money accounted for (paid = escrow
held + released + refunded), and payments and refunds streamed for the checks that need
group-buying's participants and the wallets' credits."""

import uuid
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from laku.core.audit import InvariantOut, checked_rows, keyed_page, total
from laku.payment.models import Payment, Refund
from laku.payment.rules import EscrowStatus
from laku.payment.schemas import AuditPaymentOut, AuditRefundOut


def _escrow_figures() -> tuple[Any, ...]:
    """Per payment: what was paid, what its escrow holds and has released (what is left after
    its refunded amount), and the sum of its refund rows."""
    refunds = (
        select(Refund.payment_id, func.sum(Refund.amount).label("amount"))
        .group_by(Refund.payment_id)
        .subquery()
    )
    left = Payment.amount - Payment.refunded_amount
    paid = case((Payment.escrow_status != EscrowStatus.NONE.value, Payment.amount), else_=0)
    held = case((Payment.escrow_status == EscrowStatus.HELD.value, left), else_=0)
    released = case((Payment.escrow_status == EscrowStatus.RELEASED.value, left), else_=0)
    refunded = func.coalesce(refunds.c.amount, 0)
    return refunds, paid, held, released, refunded


async def escrow_accounted(session: AsyncSession) -> InvariantOut:
    """For every payment: paid = escrow held + released + refunded (its refund rows)."""
    refunds, paid, held, released, refunded = _escrow_figures()
    per_payment = (
        select(
            Payment.id,
            paid.label("paid"),
            held.label("held"),
            released.label("released"),
            refunded.label("refunded"),
        )
        .outerjoin(refunds, refunds.c.payment_id == Payment.id)
        .subquery()
    )
    return await checked_rows(
        session,
        "payment.paid_is_held_released_refunded",
        per_payment,
        key=per_payment.c.id,
        broken=per_payment.c.paid
        != (per_payment.c.held + per_payment.c.released + per_payment.c.refunded),
        figures={
            "payments": func.count(),
            "paidPayments": func.count().filter(per_payment.c.paid > 0),
            "paid": total(per_payment.c.paid),
            "held": total(per_payment.c.held),
            "released": total(per_payment.c.released),
            "refunded": total(per_payment.c.refunded),
        },
        describe=lambda row: (
            f"{row.id} (paid {row.paid}, held {row.held}, released {row.released}, "
            f"refunded {row.refunded})"
        ),
    )


async def audit(session: AsyncSession) -> list[InvariantOut]:
    """Every payment's money accounted for: paid = escrow held + released + refunded."""
    return [await escrow_accounted(session)]


async def payments_page(
    session: AsyncSession, after: str | None, through: str | None, limit: int
) -> list[AuditPaymentOut]:
    """Payments by reference (byte order), in (after, through]."""
    reference = Payment.reference.collate("C")
    query = select(
        Payment.id,
        Payment.reference,
        Payment.status,
        Payment.escrow_status,
        Payment.amount,
        Payment.updated_at,
    )
    return await keyed_page(
        session, query, reference, AuditPaymentOut, after=after, through=through, limit=limit
    )


async def refunds_page(
    session: AsyncSession, after: uuid.UUID | None, limit: int
) -> list[AuditRefundOut]:
    """Refunds by id, each with its buyer, after `after`."""
    query = select(
        Refund.id, Refund.amount, Refund.status, Refund.created_at, Payment.user_id
    ).join(Payment, Payment.id == Refund.payment_id)
    return await keyed_page(session, query, Refund.id, AuditRefundOut, after=after, limit=limit)
