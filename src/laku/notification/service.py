"""Notifications: storing them, in-app inboxes, and who may see which."""

import uuid
from collections.abc import Sequence

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from laku.core.errors import Conflict, NotFound
from laku.core.outbox import enqueue
from laku.core.security import Principal
from laku.notification.models import Notification, outbox
from laku.notification.schemas import Channel, NotificationRequest, NotificationStatus

# The outbox kind whose handler sends a WhatsApp or e-mail notification.
DELIVER_NOTIFICATION = "deliver_notification"


def _not_found() -> NotFound:
    return NotFound("No such notification", code="notification_not_found")


async def create_notification(session: AsyncSession, request: NotificationRequest) -> Notification:
    """Store the notification; a WhatsApp or e-mail one also gets its delivery queued in the
    same transaction, so it is sent once committed however the process fares afterwards.
    An in-app notification is delivered by being stored."""
    in_app = request.channel is Channel.IN_APP
    notification = Notification(
        user_id=request.user_id,
        channel=request.channel.value,
        to=request.to,
        subject=request.subject,
        text=request.text,
        template=request.template.model_dump(mode="json") if request.template else None,
        status=(NotificationStatus.SENT if in_app else NotificationStatus.PENDING).value,
        sent_at=func.now() if in_app else None,
    )
    session.add(notification)
    await session.flush()
    if not in_app:
        await enqueue(
            session, outbox, DELIVER_NOTIFICATION, {"notificationId": str(notification.id)}
        )
    await session.commit()
    await session.refresh(notification)  # server-set columns (created_at, sent_at) as stored
    return notification


def _newest_first(query: Select[tuple[Notification]]) -> Select[tuple[Notification]]:
    return query.order_by(Notification.created_at.desc(), Notification.id.desc())


async def _page(
    session: AsyncSession, query: Select[tuple[Notification]], *, limit: int, offset: int
) -> tuple[Sequence[Notification], int]:
    total = await session.scalar(select(func.count()).select_from(query.subquery()))
    items = await session.scalars(_newest_first(query).limit(limit).offset(offset))
    return items.all(), total or 0


async def list_inbox(
    session: AsyncSession, user_id: uuid.UUID, *, limit: int, offset: int
) -> tuple[Sequence[Notification], int]:
    """The user's in-app notifications, newest first."""
    query = select(Notification).where(
        Notification.user_id == user_id, Notification.channel == Channel.IN_APP.value
    )
    return await _page(session, query, limit=limit, offset=offset)


async def list_notifications(
    session: AsyncSession,
    *,
    channel: Channel | None,
    status: NotificationStatus | None,
    limit: int,
    offset: int,
) -> tuple[Sequence[Notification], int]:
    query = select(Notification)
    if channel is not None:
        query = query.where(Notification.channel == channel.value)
    if status is not None:
        query = query.where(Notification.status == status.value)
    return await _page(session, query, limit=limit, offset=offset)


async def get_notification(
    session: AsyncSession, notification_id: uuid.UUID, principal: Principal
) -> Notification:
    """Admins and services see any notification; a user only its own (others are not found)."""
    query = select(Notification).where(Notification.id == notification_id)
    if not principal.is_privileged:
        query = query.where(Notification.user_id == principal.user_id)
    notification = await session.scalar(query)
    if notification is None:
        raise _not_found()
    return notification


async def mark_read(
    session: AsyncSession, notification_id: uuid.UUID, owner: uuid.UUID
) -> Notification:
    """Mark one of the owner's in-app notifications read; reading it again keeps the first time."""
    notification = await session.scalar(
        select(Notification)
        .where(Notification.id == notification_id, Notification.user_id == owner)
        .with_for_update()
    )
    if notification is None:
        raise _not_found()
    if notification.channel != Channel.IN_APP.value:
        raise Conflict(
            "Only in-app notifications are read in the app", code="not_an_in_app_notification"
        )
    if notification.read_at is None:
        notification.read_at = func.now()
        await session.commit()
        await session.refresh(notification)
    return notification
