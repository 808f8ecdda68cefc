"""Typed client other services use to notify people (warehouse: WhatsApp a factory about a PO;
group-buying and payment: tell buyers about their group buys and refunds).

`send` and `notify_users` return once the notifications are stored (202); delivery happens
afterwards and is retried until the provider accepts it, so a provider outage delays a message
but never loses it.
"""

from collections.abc import Sequence

from laku.core.http import ServiceClient
from laku.notification.rules import Channel, NotificationStatus
from laku.notification.schemas import (
    MAX_USER_NOTIFICATIONS_PER_CALL,
    NotificationOut,
    NotificationRequest,
    TemplateMessage,
    UserNotification,
    UserNotificationsCreate,
    UserNotificationsOut,
)

__all__ = [
    "MAX_USER_NOTIFICATIONS_PER_CALL",
    "Channel",
    "NotificationClient",
    "NotificationOut",
    "NotificationRequest",
    "NotificationStatus",
    "TemplateMessage",
    "UserNotification",
    "UserNotificationsOut",
]


class NotificationClient(ServiceClient):
    async def send(self, request: NotificationRequest, *, idempotency_key: str) -> NotificationOut:
        """Store a notification for delivery. The same key sends one message however often
        it is retried (derive it from what is being notified, e.g. `po:<id>:created`)."""
        return await self.post_model(
            "/api/notifications",
            request,
            NotificationOut,
            idempotency_key=idempotency_key,
            exclude_none=True,
        )

    async def notify_users(
        self, items: Sequence[UserNotification], *, idempotency_key: str
    ) -> UserNotificationsOut:
        """Tell up to MAX_USER_NOTIFICATIONS_PER_CALL users (send more in chunks) of an event
        each: in the app, by e-mail, and on WhatsApp where the user has a phone. Each item's
        `key` (e.g. `joined:<participant id>`) is told once per channel ever, so a retried or
        repeated call counts as `alreadySent` what it told before. Users auth-service does not
        know are skipped (`unknownUsers`). Keep texts short: a full chunk must fit in 1 MiB."""
        return await self.post_model(
            "/api/notifications/users",
            UserNotificationsCreate(items=list(items)),
            UserNotificationsOut,
            idempotency_key=idempotency_key,
        )
