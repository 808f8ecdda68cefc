"""Typed client other services use to notify people (warehouse: WhatsApp a factory about a PO).

`send` returns once the notification is stored (202); delivery happens afterwards and is retried
until the provider accepts it, so a provider outage delays a message but never loses it.
"""

from laku.core.http import ServiceClient
from laku.notification.schemas import (
    Channel,
    NotificationOut,
    NotificationRequest,
    NotificationStatus,
    TemplateMessage,
)

__all__ = [
    "Channel",
    "NotificationClient",
    "NotificationOut",
    "NotificationRequest",
    "NotificationStatus",
    "TemplateMessage",
]


class NotificationClient(ServiceClient):
    async def send(self, request: NotificationRequest, *, idempotency_key: str) -> NotificationOut:
        """Store a notification for delivery. The same key sends one message however often
        it is retried (derive it from what is being notified, e.g. `po:<id>:created`)."""
        response = await self.request(
            "POST",
            "/api/notifications",
            json=request.model_dump(mode="json", by_alias=True, exclude_none=True),
            idempotency_key=idempotency_key,
        )
        return NotificationOut.model_validate(response.json())
