"""Notifications: storing them, in-app inboxes, and who may see which."""

import uuid
from collections.abc import Sequence
from typing import Any

import structlog
from sqlalchemy import Select, String, Uuid, any_, bindparam, case, func, literal, select
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.ext.asyncio import AsyncSession

from laku.auth.client import AuthClient, UserContactOut
from laku.core.db import array_rows, insert_rows
from laku.core.errors import Conflict, NotFound
from laku.core.outbox import enqueue
from laku.core.rows import found, page
from laku.core.security import Principal
from laku.notification.models import Notification, PushSubscription, outbox
from laku.notification.rules import Channel, NotificationStatus, whatsapp_number
from laku.notification.schemas import (
    NotificationRequest,
    PushSubscriptionCreate,
    UserNotification,
    UserNotificationsCreate,
    UserNotificationsOut,
)
from laku.notification.tasks import DELIVER_NOTIFICATION

log = structlog.get_logger()


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


async def notify_users(
    session: AsyncSession, auth: AuthClient, request: UserNotificationsCreate
) -> UserNotificationsOut:
    """Tell each item's user in the app, by e-mail, (with a phone) on WhatsApp and (with a
    browser subscribed) by Web Push. The users are looked up in one call before any connection
    is taken; then every notification is written in one statement that skips a (key, channel)
    stored before, and the messages written now are queued for delivery in the same
    transaction."""
    items = request.items
    users = {user.id: user for user in await auth.lookup_users({item.user_id for item in items})}
    subscribed = set(
        await session.scalars(
            select(PushSubscription.user_id)
            .where(PushSubscription.user_id.in_(list(users)))
            .distinct()
        )
    )
    rows = [
        row
        for item in items
        if item.user_id in users
        for row in _rows(item, users[item.user_id], pushed=item.user_id in subscribed)
    ]
    unknown_users = sum(item.user_id not in users for item in items)
    created = await _insert_new(session, rows) if rows else []
    deliveries = [
        notification_id for notification_id, channel in created if channel != Channel.IN_APP
    ]
    if deliveries:
        await session.execute(
            outbox.insert().from_select(
                ["kind", "payload"],
                select(
                    literal(DELIVER_NOTIFICATION),
                    func.jsonb_build_object("notificationId", Notification.id),
                ).where(Notification.id == any_(bindparam(None, deliveries, type_=ARRAY(Uuid())))),
            )
        )
    await session.commit()
    log.info("users_notified", created=len(created), items=len(items), unknown_users=unknown_users)
    return UserNotificationsOut(
        created=len(created),
        already_sent=len(rows) - len(created),
        unknown_users=unknown_users,
    )


def _rows(item: UserNotification, user: UserContactOut, *, pushed: bool) -> list[dict[str, Any]]:
    """The user's notifications of one item: in-app, e-mail, WhatsApp if it has a phone, and a
    push if it subscribed a browser."""

    def row(channel: Channel, recipient: str | None, subject: str | None, body: str) -> dict:
        return {
            "user_id": item.user_id,
            "key": item.key,
            "channel": channel.value,
            "recipient": recipient,
            "subject": subject,
            "body": body,
        }

    rows = [
        row(Channel.IN_APP, None, item.subject, item.text),
        row(Channel.EMAIL, user.email, item.subject, f"Hi {user.name},\n\n{item.text}"),
    ]
    phone = _whatsapp_number_or_none(user)
    if phone is not None:
        rows.append(row(Channel.WHATSAPP, phone, None, item.text))  # WhatsApp has no subject
    if pushed:
        rows.append(row(Channel.PUSH, None, item.subject, item.text))
    return rows


def _whatsapp_number_or_none(user: UserContactOut) -> str | None:
    if user.phone is None:
        return None
    try:
        return whatsapp_number(user.phone)
    except ValueError:
        log.warning("phone_not_reachable_on_whatsapp", user_id=str(user.id))
        return None


# What a notification to a user is written with; the rest follows from its channel.
_USER_NOTIFICATION_COLUMNS = ("user_id", "key", "channel", "recipient", "subject", "body")
_COLUMN_TYPES = {"user_id": Uuid()}


async def _insert_new(
    session: AsyncSession, rows: list[dict[str, Any]]
) -> list[tuple[uuid.UUID, str]]:
    """Insert the rows (one array parameter per column, however many rows) except those whose
    key and channel are stored already; returns the id and channel of each inserted."""
    ids = [uuid.uuid4() for _ in rows]
    new = array_rows(
        ("id", Uuid(), ids),
        *(
            (name, _COLUMN_TYPES.get(name, String()), [row[name] for row in rows])
            for name in _USER_NOTIFICATION_COLUMNS
        ),
    )
    in_app = new.c.channel == Channel.IN_APP.value
    # In-app notifications are delivered by being stored; the others when a provider takes them.
    status = case((in_app, NotificationStatus.SENT.value), else_=NotificationStatus.PENDING.value)
    table = Notification.__table__
    inserted = await session.execute(
        insert_rows(table, new, status=status, sent_at=case((in_app, func.now())))
        .on_conflict_do_nothing(index_elements=["key", "channel"])
        .returning(table.c.id, table.c.channel)
    )
    return [(row.id, row.channel) for row in inserted]


async def _newest_first(
    session: AsyncSession, query: Select[tuple[Notification]], *, limit: int, offset: int
) -> tuple[list[Notification], int]:
    return await page(
        session,
        query,
        Notification.created_at.desc(),
        Notification.id.desc(),
        limit=limit,
        offset=offset,
    )


async def list_inbox(
    session: AsyncSession, user_id: uuid.UUID, *, limit: int, offset: int
) -> tuple[Sequence[Notification], int]:
    """The user's in-app notifications, newest first."""
    query = select(Notification).where(
        Notification.user_id == user_id, Notification.channel == Channel.IN_APP.value
    )
    return await _newest_first(session, query, limit=limit, offset=offset)


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
    return await _newest_first(session, query, limit=limit, offset=offset)


async def get_notification(
    session: AsyncSession, notification_id: uuid.UUID, principal: Principal
) -> Notification:
    """Admins and services see any notification; a user only its own (others are not found)."""
    query = select(Notification).where(Notification.id == notification_id)
    if not principal.is_privileged:
        query = query.where(Notification.user_id == principal.user_id)
    return found(await session.scalar(query), _not_found())


async def mark_read(
    session: AsyncSession, notification_id: uuid.UUID, owner: uuid.UUID
) -> Notification:
    """Mark one of the owner's in-app notifications read; reading it again keeps the first time."""
    notification = found(
        await session.scalar(
            select(Notification)
            .where(Notification.id == notification_id, Notification.user_id == owner)
            .with_for_update()
        ),
        _not_found(),
    )
    if notification.channel != Channel.IN_APP.value:
        raise Conflict(
            "Only in-app notifications are read in the app", code="not_an_in_app_notification"
        )
    if notification.read_at is None:
        notification.read_at = func.now()
        await session.commit()
        await session.refresh(notification)
    return notification


# Web Push subscriptions ----------------------------------------------------------------------


async def subscribe(
    session: AsyncSession, user_id: uuid.UUID, request: PushSubscriptionCreate
) -> PushSubscription:
    """Store the browser's subscription for the user. An endpoint is one browser's: subscribing
    it again (new keys, or another user signed in on it) replaces what was stored."""
    values = {
        "user_id": user_id,
        "p256dh": request.keys.p256dh,
        "auth": request.keys.auth,
    }
    subscription_id = await session.scalar(
        insert(PushSubscription)
        .values(id=uuid.uuid4(), endpoint=request.endpoint, **values)
        .on_conflict_do_update(index_elements=[PushSubscription.endpoint], set_=values)
        .returning(PushSubscription.id)
    )
    await session.commit()
    subscription = await session.get(PushSubscription, subscription_id)
    assert subscription is not None
    return subscription


async def list_subscriptions(
    session: AsyncSession, user_id: uuid.UUID
) -> Sequence[PushSubscription]:
    return (
        await session.scalars(
            select(PushSubscription)
            .where(PushSubscription.user_id == user_id)
            .order_by(PushSubscription.created_at, PushSubscription.id)
        )
    ).all()


async def unsubscribe(
    session: AsyncSession, subscription_id: uuid.UUID, user_id: uuid.UUID
) -> None:
    """Forget one of the user's subscriptions; another user's does not exist."""
    subscription = await session.get(PushSubscription, subscription_id)
    if subscription is None or subscription.user_id != user_id:
        raise NotFound("No such push subscription", code="push_subscription_not_found")
    await session.delete(subscription)
    await session.commit()
