"""Sending queued WhatsApp, e-mail and push notifications: the outbox's one kind and its
handler.

A provider failure leaves the notification `pending` (with the attempt and error recorded) and
raises, so the relay tries again with back-off: an outage delays a message, never loses it. A
notification already `sent` is never sent again. The one window left is a crash between the
provider accepting a message and us recording it, which WhatsApp's API (no idempotency key)
cannot close: that message may go out twice.
"""

import uuid
from collections.abc import Mapping
from typing import Any

import structlog
from fastapi import FastAPI
from sqlalchemy import delete, func, select, update

from laku.core.db import Database
from laku.core.outbox import Handler
from laku.notification.models import Notification, PushSubscription
from laku.notification.rules import Channel, NotificationStatus
from laku.notification.schemas import TemplateMessage
from laku.providers.smtp.client import SmtpClient
from laku.providers.webpush.client import (
    PushSubscription as Subscription,
)
from laku.providers.webpush.client import (
    SubscriptionGone,
    WebPushClient,
    WebPushError,
)
from laku.providers.whatsapp.client import WhatsAppClient

log = structlog.get_logger()

# The kind whose handler sends a WhatsApp, e-mail or push notification.
DELIVER_NOTIFICATION = "deliver_notification"

_MAX_ERROR_LENGTH = 2000


def outbox_handlers(app: FastAPI) -> Mapping[str, Handler]:
    state = app.state
    sender = NotificationSender(
        state.db,
        WhatsAppClient.from_settings(state.settings, state.http),
        SmtpClient.from_settings(state.settings),
        state.webpush,  # the one whose public key browsers subscribe with
    )
    return {DELIVER_NOTIFICATION: sender.deliver}


class NotificationSender:
    def __init__(
        self, db: Database, whatsapp: WhatsAppClient, smtp: SmtpClient, webpush: WebPushClient
    ):
        self._db = db
        self._whatsapp = whatsapp
        self._smtp = smtp
        self._webpush = webpush

    async def deliver(self, outbox_id: int, payload: dict[str, Any]) -> None:
        notification_id = uuid.UUID(payload["notificationId"])
        async with self._db.sessions() as session:
            notification = await session.get(Notification, notification_id)
        if notification is None or notification.status == NotificationStatus.SENT:
            return  # sent by an earlier attempt whose outbox row was not marked delivered
        try:
            provider_message_id = await self._send(notification)
        except Exception as exc:
            await self._record(notification_id, last_error=str(exc)[:_MAX_ERROR_LENGTH])
            raise
        await self._record(
            notification_id,
            status=NotificationStatus.SENT.value,
            provider_message_id=provider_message_id,
            sent_at=func.now(),
            last_error=None,
        )

    async def _send(self, notification: Notification) -> str | None:
        """Hand the message to its provider; returns the provider's id for it."""
        if notification.channel == Channel.PUSH:
            return await self._push(notification)
        to = notification.to
        assert to is not None  # the table's constraint: only in-app notifications lack one
        if notification.channel == Channel.EMAIL:
            return await self._smtp.send_email(to, notification.subject or "", notification.text)
        if notification.template is not None:
            template = TemplateMessage.model_validate(notification.template)
            return await self._whatsapp.send_template(
                to, template.name, template.language, template.params
            )
        return await self._whatsapp.send_text(to, notification.text)

    async def _push(self, notification: Notification) -> str | None:
        """Push to every browser the user subscribed; a subscription the push service reports
        gone is removed. Returns the first message's location. A failure on any other
        subscription raises once all were tried, so the relay tries again (a browser already
        reached may then get the notice twice; the service worker shows it by its `key`)."""
        async with self._db.sessions() as session:
            subscriptions = (
                await session.scalars(
                    select(PushSubscription).where(PushSubscription.user_id == notification.user_id)
                )
            ).all()
        message = {
            "key": notification.key,
            "notificationId": str(notification.id),
            "title": notification.subject,
            "body": notification.text,
        }
        locations: list[str | None] = []
        gone: list[uuid.UUID] = []
        failures: list[WebPushError] = []
        for subscription in subscriptions:
            try:
                locations.append(
                    await self._webpush.send(
                        Subscription(subscription.endpoint, subscription.p256dh, subscription.auth),
                        message,
                    )
                )
            except SubscriptionGone:
                gone.append(subscription.id)
            except WebPushError as exc:
                failures.append(exc)
        if gone:
            log.info("push_subscriptions_gone", user_id=str(notification.user_id), count=len(gone))
            async with self._db.sessions.begin() as session:
                await session.execute(delete(PushSubscription).where(PushSubscription.id.in_(gone)))
        if failures:
            raise failures[0]
        return next((location for location in locations if location), None)

    async def _record(self, notification_id: uuid.UUID, **values: Any) -> None:
        """Count the attempt and store its outcome, unless the notification is already sent."""
        async with self._db.sessions.begin() as session:
            await session.execute(
                update(Notification)
                .where(
                    Notification.id == notification_id,
                    Notification.status == NotificationStatus.PENDING.value,
                )
                .values(attempts=Notification.attempts + 1, **values)
            )
