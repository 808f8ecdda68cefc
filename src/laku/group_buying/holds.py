"""Joins whose stock hold lapsed unpaid: cancelled in batches by a sweeper, their payments
given up and their stock released through the outbox."""

import asyncio
from collections.abc import Callable
from datetime import timedelta

import structlog
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from laku.core.db import Database
from laku.group_buying.models import GroupBuyingSession, Participant
from laku.group_buying.rules import CancelReason, ParticipantStatus
from laku.group_buying.sessions import give_up_later

log = structlog.get_logger()


async def cancel_lapsed_joins(session: AsyncSession, limit: int) -> int:
    """Cancel up to `limit` joins still unpaid when their stock hold lapsed (their invoice
    expired a grace period before without a word from payment-service, or the join died half
    way): their payments are given up and their stock released, through the outbox. Returns
    how many were cancelled."""
    sessions = list(
        await session.scalars(
            select(Participant.session_id)
            .where(
                Participant.status == ParticipantStatus.PENDING_PAYMENT,
                Participant.hold_expires_at < func.now(),
            )
            .group_by(Participant.session_id)
            .order_by(Participant.session_id)
            .limit(limit)
        )
    )
    if not sessions:
        await session.commit()
        return 0
    # Session rows first (shared: no paid quantity changes), as every writer locks them.
    await session.execute(
        select(GroupBuyingSession.id)
        .where(GroupBuyingSession.id.in_(sessions))
        .order_by(GroupBuyingSession.id)
        .with_for_update(read=True)
    )
    lapsed = list(
        await session.scalars(
            update(Participant)
            .where(
                Participant.id.in_(
                    select(Participant.id)
                    .where(
                        Participant.session_id.in_(sessions),
                        Participant.status == ParticipantStatus.PENDING_PAYMENT,
                        Participant.hold_expires_at < func.now(),
                    )
                    .limit(limit)
                    .scalar_subquery()
                ),
                Participant.status == ParticipantStatus.PENDING_PAYMENT,
            )
            .values(
                status=ParticipantStatus.CANCELLED,
                cancelled_at=func.now(),
                cancel_reason=CancelReason.HOLD_LAPSED,
            )
            .returning(Participant)
        )
    )
    for participant in lapsed:
        await give_up_later(session, participant)
    await session.commit()
    if lapsed:
        log.info("lapsed_joins_cancelled", participants=len(lapsed))
    return len(lapsed)


async def run_join_sweeper(
    db: Database, interval: timedelta, wake_outbox: Callable[[], None]
) -> None:
    """Cancel joins whose stock hold lapsed unpaid, every `interval`, in batches."""
    batch = 500
    while True:
        await asyncio.sleep(interval.total_seconds())
        try:
            while True:
                async with db.sessions() as session:
                    cancelled = await cancel_lapsed_joins(session, batch)
                if cancelled:
                    wake_outbox()
                if cancelled < batch:
                    break
        except Exception:
            log.exception("join_sweep_failed")
