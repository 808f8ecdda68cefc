"""notification-service (port 3007): WhatsApp, e-mail, Web Push and in-app notifications via an
outbox."""

from fastapi import FastAPI

from laku.auth.client import AuthClient
from laku.core.app import create_service_app, service_client
from laku.notification.models import idempotency_keys, outbox
from laku.notification.routes import router
from laku.notification.tasks import outbox_handlers
from laku.providers.webpush.client import WebPushClient


async def _startup(app: FastAPI) -> None:
    state = app.state
    # Who a user is (e-mail, name, phone) is asked of auth-service when notifying users.
    state.auth = service_client(app, AuthClient, "auth")
    state.webpush = WebPushClient.from_settings(state.settings, state.http)


def create_app() -> FastAPI:
    return create_service_app(
        "notification",
        [router],
        idempotency_keys,
        startup=_startup,
        outbox=(outbox, outbox_handlers),
        # Each item's key is told once per channel: a repeat is answered by what it would add.
        idempotent_by_body=frozenset({"/api/notifications/users"}),
    )
