"""Group-buying's deferred work: the outbox kinds, and what the relay does with each.

A row is written in the transaction of the change that causes it (a join given up, a payment
arriving, a session cancelled or ended) and delivered from there. A handler returning means
done; a refusal it does not handle is the outbox's to judge: retried if it may pass (an
outage, work in progress at the callee), else dead-lettered with its reason for an admin.
"""

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import structlog
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from laku.core.http import refused_with
from laku.core.outbox import Batched, Handler, enqueue
from laku.group_buying.models import GroupBuyingSession, Participant, outbox
from laku.group_buying.rules import (
    OPEN_STATUSES,
    CancelReason,
    ParticipantStatus,
    SessionStatus,
    participant_reference,
)

log = structlog.get_logger()

RELEASE_RESERVATION = "release_reservation"
CONFIRM_RESERVATION = "confirm_reservation"
EXPIRE_PAYMENT_BY_REFERENCE = "expire_payment_by_reference"
# Written by earlier releases only; rows of it may still wait in a deployment's outbox.
EXPIRE_PAYMENT = "expire_payment"
SETTLE_CANCELLED_SESSION = "settle_cancelled_session"
REFUND_LATE_PAYMENT = "refund_late_payment"
# Notices: a few carried in the row (a join's, a payment's), and every notice of how one
# session ended, read from its participants when sent.
NOTIFY_BUYERS = "notify_buyers"
NOTIFY_SESSION_OUTCOME = "notify_session_outcome"


async def hold_lapsed(session: AsyncSession, participant_id: uuid.UUID) -> bool:
    """warehouse-service refused to confirm a paid participant's hold: it lapsed (and its stock
    was released) before the payment arrived. The participant does not keep a place without
    stock: it is cancelled, its units leave the paid quantity and its money goes back in full.
    A session whose close has begun keeps it (the close reserves a paid hold again). True
    when the participant was cancelled."""
    session_id = await session.scalar(
        select(Participant.session_id).where(Participant.id == participant_id)
    )
    if session_id is None:
        return False
    group = await session.scalar(
        select(GroupBuyingSession)
        .where(GroupBuyingSession.id == session_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    participant = await session.scalar(
        select(Participant)
        .where(Participant.id == participant_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    assert group is not None and participant is not None  # neither is ever deleted
    if (
        participant.status != ParticipantStatus.PAID
        or group.status not in OPEN_STATUSES
        or group.close_step is not None
    ):
        await session.commit()
        return False
    log.warning("paid_after_hold_lapsed", participant_id=str(participant_id))
    participant.cancel(CancelReason.HOLD_LAPSED, datetime.now(UTC))
    group.paid_quantity -= participant.quantity
    if group.paid_quantity < group.target_moq:
        group.status = SessionStatus.ACTIVE if group.paid_quantity else SessionStatus.FORMING
    await enqueue(session, outbox, REFUND_LATE_PAYMENT, {"participantId": str(participant.id)})
    await session.commit()
    return True


def outbox_handlers(app: FastAPI) -> Mapping[str, Handler | Batched]:
    state = app.state

    async def release_reservation(_: int, payload: dict[str, Any]) -> None:
        await state.warehouse.release(payload["reference"])

    async def confirm_reservation(_: int, payload: dict[str, Any]) -> None:
        """A paid participant's hold must not lapse; if it already has, it gives way."""
        participant_id = uuid.UUID(payload["participantId"])
        confirming = state.warehouse.confirm(participant_reference(participant_id))
        if await refused_with(confirming, "reservation_released"):
            async with state.db.sessions() as session:
                if await hold_lapsed(session, participant_id):
                    state.outbox_relay.wake()

    async def expire_payment_by_reference(_: int, payload: dict[str, Any]) -> None:
        """A join given up: its payment, made or not, must never be left payable. One already
        paid stays so: its PAID event finds the participant cancelled, and gives the money
        back. Any other refusal (payment_in_progress included) is asked again."""
        await refused_with(
            state.payments.expire_by_reference(payload["reference"]), "payment_already_paid"
        )

    async def settle_cancelled_session(_: int, payload: dict[str, Any]) -> None:
        await state.closer.settle_cancelled(uuid.UUID(payload["sessionId"]))

    async def refund_late_payment(_: int, payload: dict[str, Any]) -> None:
        await state.closer.refund_late_payment(uuid.UUID(payload["participantId"]))

    async def expire_payment(_: int, payload: dict[str, Any]) -> None:
        payment_id = uuid.UUID(payload["paymentId"])
        expiring = state.payments.expire_payment(
            payment_id, idempotency_key=f"expire-payment:{payment_id}"
        )
        if await refused_with(expiring, "payment_already_paid"):
            # Nothing left to expire: its PAID event records the payment on the cancelled
            # participant, whose money is then refunded (REFUND_LATE_PAYMENT).
            log.info("expire_found_paid", payment_id=str(payment_id))

    return {
        RELEASE_RESERVATION: release_reservation,
        CONFIRM_RESERVATION: confirm_reservation,
        EXPIRE_PAYMENT_BY_REFERENCE: expire_payment_by_reference,
        EXPIRE_PAYMENT: expire_payment,
        SETTLE_CANCELLED_SESSION: settle_cancelled_session,
        REFUND_LATE_PAYMENT: refund_late_payment,
        NOTIFY_BUYERS: Batched(state.notices.send),
        NOTIFY_SESSION_OUTCOME: state.notices.send_session_outcome,
    }
