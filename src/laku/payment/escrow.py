"""Escrow released to the factory of a group buy that succeeded, and what was released to a
factory in a period (the base of its settlement)."""

import uuid
from collections.abc import Sequence
from datetime import datetime

import structlog
from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from laku.core.errors import Conflict
from laku.core.problems import problem
from laku.payment.bulk import among, locked, named
from laku.payment.models import Payment, Refund
from laku.payment.rules import EscrowStatus, RefundReason, escrow_held
from laku.payment.schemas import (
    CancelledOrderRefundOut,
    EscrowReleasedOut,
    EscrowReleaseOut,
    ReleasedSessionOut,
)

log = structlog.get_logger()


EscrowNotHeld = problem(
    Conflict, "escrow_not_held", "Only a paid payment whose escrow is held can be released"
)


async def release_escrow(
    session: AsyncSession,
    payment_ids: Sequence[uuid.UUID],
    factory_id: uuid.UUID,
    group_session_id: uuid.UUID,
) -> EscrowReleaseOut:
    """Release the held escrow of paid payments (what was paid less what was refunded) to the
    factory of their group buy, recorded on each for its settlement, then commit; already
    released ones are left as they are."""
    payments = await locked(
        session,
        payment_ids,
        Payment.status,
        Payment.escrow_status,
        Payment.amount,
        Payment.refunded_amount,
        Payment.escrow_released_at,
    )
    held = [row for row in payments.values() if escrow_held(row.status, row.escrow_status)]
    # Released before, even if its order was cancelled (and refunded in whole) since.
    released_before = sum(row.escrow_released_at is not None for row in payments.values())
    not_held = [
        f"{row.id} ({row.status}, escrow {row.escrow_status})"
        for row in payments.values()
        if not escrow_held(row.status, row.escrow_status) and row.escrow_released_at is None
    ]
    if not_held:
        raise EscrowNotHeld(f"Escrow not held: {named(not_held)}")
    if held:
        await session.execute(
            update(Payment)
            .where(among(Payment.id, [row.id for row in held]))
            .values(
                escrow_status=EscrowStatus.RELEASED.value,
                escrow_released_at=func.now(),
                released_to_factory_id=factory_id,
                group_session_id=group_session_id,
            )
            .execution_options(synchronize_session=False)
        )
        await session.commit()
    amount = sum(row.amount - row.refunded_amount for row in held)
    log.info(
        "escrow_released",
        payments=len(held),
        amount=amount,
        factory_id=str(factory_id),
        group_session_id=str(group_session_id),
    )
    return EscrowReleaseOut(released=len(held), already_released=released_before, amount=amount)


async def released_to(
    session: AsyncSession, factory_id: uuid.UUID, start: datetime, end: datetime
) -> EscrowReleasedOut:
    """What escrow released to the factory in [start, end), per group buy: what each payment
    released in the period has left after its refunds (one indexed range scan), with the
    cancelled orders' refunds among them. Both are read in one snapshot, so settlement-service
    knows exactly which refunds the total has taken off (and which it learns of later)."""
    await session.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"))
    released_in_period = (
        Payment.released_to_factory_id == factory_id,
        Payment.escrow_released_at >= start,
        Payment.escrow_released_at < end,
    )
    rows = (
        await session.execute(
            select(
                Payment.group_session_id,
                func.sum(Payment.amount - Payment.refunded_amount).label("amount"),
                func.count().label("payments"),
            )
            .where(*released_in_period)
            .group_by(Payment.group_session_id)
            .order_by(Payment.group_session_id)
        )
    ).all()
    sessions = [
        ReleasedSessionOut(
            group_session_id=row.group_session_id, amount=int(row.amount), payments=row.payments
        )
        for row in rows
    ]
    cancelled_order_refunds = (
        await session.execute(
            select(
                Refund.id.label("refund_id"),
                Refund.payment_id,
                Refund.amount,
                Payment.escrow_released_at,
            )
            .join(Payment, Payment.id == Refund.payment_id)
            .where(*released_in_period, Refund.reason == RefundReason.ORDER_CANCELLED.value)
            .order_by(Refund.id)
        )
    ).all()
    return EscrowReleasedOut(
        factory_id=factory_id,
        from_=start,
        to=end,
        total_amount=sum(s.amount for s in sessions),
        payments=sum(s.payments for s in sessions),
        sessions=sessions,
        cancelled_order_refunds=[
            CancelledOrderRefundOut.model_validate(row) for row in cancelled_order_refunds
        ],
    )
