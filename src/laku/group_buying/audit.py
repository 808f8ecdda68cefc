"""group-buying's part of `laku audit`: each open session's paid quantity against its paid
participants, and the live participants (pending payment or paid) streamed for the checks
against their holds in warehouse-service and their payments in payment-service."""

import uuid
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from laku.core.audit import InvariantOut, invariant, keyed_page
from laku.group_buying.models import GroupBuyingSession, Participant
from laku.group_buying.rules import OPEN_STATUSES, ParticipantStatus
from laku.group_buying.schemas import AuditParticipantOut

LIVE = (ParticipantStatus.PENDING_PAYMENT, ParticipantStatus.PAID)


async def paid_quantity_matches(session: AsyncSession) -> InvariantOut:
    """An open session's paid quantity is the sum of its paid participants' quantities (at
    the close and at a cancel the participants move on, and the figure stays as it was)."""
    paid = (
        select(Participant.session_id, func.sum(Participant.quantity).label("quantity"))
        .where(Participant.status == ParticipantStatus.PAID)
        .group_by(Participant.session_id)
        .subquery()
    )
    rows = (
        await session.execute(
            select(GroupBuyingSession.id, GroupBuyingSession.paid_quantity, paid.c.quantity)
            .outerjoin(paid, paid.c.session_id == GroupBuyingSession.id)
            .where(GroupBuyingSession.status.in_([status.value for status in OPEN_STATUSES]))
            .order_by(GroupBuyingSession.id)
        )
    ).all()
    live = dict(
        (
            await session.execute(
                select(Participant.status, func.count())
                .where(Participant.status.in_([status.value for status in LIVE]))
                .group_by(Participant.status)
            )
        ).all()
    )
    return invariant(
        "group_buying.paid_quantity_matches_participants",
        {
            "openSessions": len(rows),
            "paidQuantity": sum(row.paid_quantity for row in rows),
            "pendingPaymentParticipants": live.get(ParticipantStatus.PENDING_PAYMENT.value, 0),
            "paidParticipants": live.get(ParticipantStatus.PAID.value, 0),
        },
        [
            f"{row.id} (paid quantity {row.paid_quantity}, paid participants "
            f"{int(row.quantity or 0)})"
            for row in rows
            if row.paid_quantity != (row.quantity or 0)
        ],
    )


async def audit(session: AsyncSession) -> list[InvariantOut]:
    """Each open session's paid quantity against its paid participants."""
    return [await paid_quantity_matches(session)]


async def live_participants_page(
    session: AsyncSession, after: uuid.UUID | None, changed_since: datetime | None, limit: int
) -> list[AuditParticipantOut]:
    """Participants pending payment or paid, and any other changed since `changed_since` (what
    they held may still be on its way back), by id after `after`: their references
    (`participant:<id>`) come in the same (byte) order."""
    query = select(
        Participant.id,
        Participant.reservation_reference.label("reference"),
        Participant.status,
        Participant.quantity,
        Participant.total_price,
        Participant.payment_id,
        Participant.updated_at,
    )
    live = Participant.status.in_([status.value for status in LIVE])
    query = query.where(
        live if changed_since is None else live | (Participant.updated_at > changed_since)
    )
    return await keyed_page(
        session, query, Participant.id, AuditParticipantOut, after=after, limit=limit
    )
