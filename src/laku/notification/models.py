import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from laku.core.db import InsertedAt, UUIDPrimaryKey, one_of, service_registry
from laku.core.idempotency import idempotency_table
from laku.core.outbox import outbox_table
from laku.notification.rules import Channel, NotificationStatus


class Base(DeclarativeBase):
    registry = service_registry("notification")


idempotency_keys = idempotency_table(Base.metadata)
# A WhatsApp or e-mail notification and its delivery are written in one transaction.
outbox = outbox_table(Base.metadata)


class Notification(UUIDPrimaryKey, Base):
    """One message to one person over one channel, and how its delivery went.

    The attribute names are those of the wire (`to`, `text`); the columns keep the names of
    what they hold (`recipient`, `body`).
    """

    __tablename__ = "notifications"
    __table_args__ = (
        one_of("channel", Channel, name="channel"),
        one_of("status", NotificationStatus, name="status"),
        # In-app and push notifications go to a user (push: every browser it subscribed).
        CheckConstraint(
            "(channel IN ('in_app', 'push')) = (recipient IS NULL)", name="recipient_per_channel"
        ),
        CheckConstraint(
            "channel NOT IN ('in_app', 'push') OR user_id IS NOT NULL", name="in_app_has_user"
        ),
        # A user's in-app inbox, newest first.
        Index("ix_notifications_user_id_created_at", "user_id", "created_at"),
        # The admin listing, filtered by channel and status.
        Index("ix_notifications_created_at", "created_at"),
        # An event is told once per channel, however often it is reported (no key: no limit).
        UniqueConstraint("key", "channel"),
    )

    # No foreign key: users live in auth-service.
    user_id: Mapped[uuid.UUID | None]
    # The event told of (e.g. "joined:<participant id>"), for notifications sent per event.
    key: Mapped[str | None] = mapped_column(String(200))
    channel: Mapped[str] = mapped_column(String(16))
    to: Mapped[str | None] = mapped_column("recipient", String(320))
    subject: Mapped[str | None] = mapped_column(String(200))
    text: Mapped[str] = mapped_column("body")
    template: Mapped[dict[str, Any] | None]
    status: Mapped[str] = mapped_column(String(16))
    provider_message_id: Mapped[str | None] = mapped_column(String(255))
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    last_error: Mapped[str | None]
    read_at: Mapped[datetime | None]
    created_at: Mapped[InsertedAt]
    sent_at: Mapped[datetime | None]


class PushSubscription(UUIDPrimaryKey, Base):
    """A browser's Web Push subscription (its `PushSubscription`): the push service endpoint and
    the keys its messages are encrypted for. Removed when the push service says it is gone."""

    __tablename__ = "push_subscriptions"

    user_id: Mapped[uuid.UUID] = mapped_column(index=True)
    endpoint: Mapped[str] = mapped_column(String(2048), unique=True)
    p256dh: Mapped[str] = mapped_column(String(100))  # base64url, the browser's P-256 key
    auth: Mapped[str] = mapped_column(String(50))  # base64url, 16 bytes
    created_at: Mapped[InsertedAt]
