"""What buyers are told about their group buys: that they joined (and where to pay), that
their payment arrived, and how the group ended (succeeded, failed or cancelled).

A notice is written to the outbox in the transaction of the change it tells of, and sent to
notification-service from there: an outage of notification-service delays a notice, never
loses it, and never fails the buyer's action. Each notice is keyed by its event and
participant (`joined:<participant id>`...), which notification-service tells once per channel,
so a retried delivery tells nobody twice. How a group ended is one outbox row per session,
sent in chunks of MAX_USER_NOTIFICATIONS_PER_CALL, never a call per participant.
"""

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from laku.core.db import Database
from laku.core.money import format_rupiah
from laku.core.outbox import Row, enqueue
from laku.group_buying.models import GroupBuyingSession, Participant, outbox
from laku.group_buying.rules import CancelReason, ParticipantStatus, SessionStatus, tier_refund
from laku.group_buying.tasks import NOTIFY_BUYERS, NOTIFY_SESSION_OUTCOME
from laku.notification.client import (
    MAX_USER_NOTIFICATIONS_PER_CALL,
    NotificationClient,
    UserNotification,
)

# Times are told as Jakarta reads them, where the platform's warehouse is.
WIB = timezone(timedelta(hours=7), "WIB")
# A product's name as told in a notice: a chunk of 2,000 notices must fit in one request.
_PRODUCT_NAME_LENGTH = 60
_SUCCEEDED = frozenset(
    {SessionStatus.SUCCESS, SessionStatus.PENDING_STOCK, SessionStatus.STOCK_RECEIVED}
)


def _wib(at: datetime) -> str:
    local = at.astimezone(WIB)
    return f"{local.day} {local:%b %Y, %H:%M} WIB"


def _product(name: str) -> str:
    if len(name) <= _PRODUCT_NAME_LENGTH:
        return name
    return name[: _PRODUCT_NAME_LENGTH - 1].rstrip() + "…"


class _Addressee(Protocol):
    """A participant, or a row of its columns: whom a notice goes to, and what it is about."""

    id: uuid.UUID
    user_id: uuid.UUID


def _notice(event: str, participant: _Addressee, subject: str, text: str) -> UserNotification:
    """Keyed by the event and the participant: notification-service tells each key once."""
    return UserNotification(
        user_id=participant.user_id, key=f"{event}:{participant.id}", subject=subject, text=text
    )


def joined_notice(
    participant: Participant,
    session_code: str,
    description: str,
    invoice_url: str,
    due: datetime,
) -> UserNotification:
    """`description` is the join's as its invoice has it ("GB-...: product (variant) x 5")."""
    return _notice(
        "joined",
        participant,
        f"You joined {session_code}",
        f"You joined {description}. Pay {format_rupiah(participant.total_price)} at "
        f"{invoice_url} before {_wib(due)}.",
    )


def paid_notice(participant: Participant, group: GroupBuyingSession) -> UserNotification:
    return _notice(
        "paid",
        participant,
        f"Payment received for {group.session_code}",
        f"We received {format_rupiah(participant.total_price)} for {group.session_code} "
        f"({_product(group.product_name)}). The group closes on {_wib(group.end_time)}.",
    )


async def notify_later(session: AsyncSession, *notices: UserNotification) -> None:
    """Send the notices once the caller's transaction commits."""
    await enqueue(
        session,
        outbox,
        NOTIFY_BUYERS,
        {"items": [notice.model_dump(mode="json", by_alias=True) for notice in notices]},
    )


async def notify_outcome_later(session: AsyncSession, session_id: uuid.UUID) -> None:
    """Tell the session's buyers how it ended (closed or cancelled) once the caller's
    transaction, which ends it, commits."""
    await enqueue(session, outbox, NOTIFY_SESSION_OUTCOME, {"sessionId": str(session_id)})


def _outcome_notice(group: GroupBuyingSession, row: Any) -> UserNotification | None:
    """The participant's notice of how the group ended; None for one it does not concern."""
    code, product = group.session_code, _product(group.product_name)
    if group.status in _SUCCEEDED:
        if row.status != ParticipantStatus.PAID or row.final_unit_price is None:
            return None
        refund = tier_refund(row.unit_price, row.final_unit_price, row.quantity)
        outcome = (
            f"{format_rupiah(refund)} will be refunded to your Laku wallet."
            if refund > 0
            else "That is the price you paid."
        )
        return _notice(
            "succeeded",
            row,
            f"Group buy {code} succeeded",
            f"{code} ({product}) reached its minimum order. Your final price is "
            f"{format_rupiah(row.final_unit_price)} per unit. {outcome}",
        )
    if group.status == SessionStatus.FAILED:
        # Those paid when it closed, refunded by the close (a late payer's join was cancelled).
        if row.status != ParticipantStatus.REFUNDED or row.cancel_reason is not None:
            return None
        return _notice(
            "failed",
            row,
            f"Group buy {code} did not reach its minimum",
            f"{code} ({product}) closed below its minimum order of {group.target_moq}. "
            f"Your {format_rupiah(row.total_price)} will be refunded in full to your Laku wallet.",
        )
    if group.status == SessionStatus.CANCELLED:
        if row.cancel_reason != CancelReason.SESSION_CANCELLED:
            return None
        what = (
            f"Your {format_rupiah(row.total_price)} will be refunded in full to your Laku wallet."
            if row.paid
            else "Its invoice can no longer be paid."
        )
        return _notice(
            "cancelled",
            row,
            f"Group buy {code} cancelled",
            f"{code} ({product}) was cancelled. {what}",
        )
    return None


@dataclass(frozen=True)
class BuyerNotices:
    """The outbox handlers that send the notices above."""

    db: Database
    notifications: NotificationClient

    async def send(self, rows: Sequence[Row]) -> None:
        """The notices of every leased row (joins, payments: the outbox delivers them
        `Batched`), in as few calls as there are chunks."""
        by_key = {
            notice.key: notice
            for _, payload in rows
            for notice in map(UserNotification.model_validate, payload["items"])
        }
        notices = list(by_key.values())
        rows_named = f"{rows[0][0]}-{rows[-1][0]}"
        step = MAX_USER_NOTIFICATIONS_PER_CALL
        for start in range(0, len(notices), step):
            await self._notify(notices[start : start + step], f"outbox:{rows_named}:{start}")

    async def send_session_outcome(self, row_id: int, payload: dict[str, Any]) -> None:
        session_id = uuid.UUID(payload["sessionId"])
        async with self.db.sessions() as session:
            group = await session.get_one(GroupBuyingSession, session_id)
            rows = (
                await session.execute(
                    select(
                        Participant.id,
                        Participant.user_id,
                        Participant.status,
                        Participant.cancel_reason,
                        Participant.paid_at.is_not(None).label("paid"),
                        Participant.quantity,
                        Participant.unit_price,
                        Participant.total_price,
                        Participant.final_unit_price,
                    )
                    .where(Participant.session_id == session_id)
                    .order_by(Participant.id)
                )
            ).all()
        notices = [notice for row in rows if (notice := _outcome_notice(group, row)) is not None]
        step = MAX_USER_NOTIFICATIONS_PER_CALL
        for start in range(0, len(notices), step):
            await self._notify(notices[start : start + step], f"outbox:{row_id}:{start}")

    async def _notify(self, notices: Sequence[UserNotification], key: str) -> None:
        # A refusal is the outbox's to judge: retried if it may pass, else dead-lettered (a
        # batch refused for good is delivered row by row, so only a bad row is kept back).
        await self.notifications.notify_users(notices, idempotency_key=key)
