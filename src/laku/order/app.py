"""order-service (port 3005): orders and order items created when a group buy succeeds, and
their lifecycle (shipped, delivered, cancelled and refunded)."""

from fastapi import FastAPI

from laku.core.app import create_service_app, service_client
from laku.group_buying.client import GroupBuyingClient
from laku.notification.client import NotificationClient
from laku.order.models import idempotency_keys, outbox
from laku.order.routes import router
from laku.order.tasks import outbox_handlers
from laku.payment.client import PaymentClient
from laku.product.client import ProductClient


async def _startup(app: FastAPI) -> None:
    app.state.group_buying = service_client(app, GroupBuyingClient, "group-buying")
    app.state.products = service_client(app, ProductClient, "product")
    app.state.payments = service_client(app, PaymentClient, "payment")
    app.state.notifications = service_client(app, NotificationClient, "notification")


def create_app() -> FastAPI:
    return create_service_app(
        "order", [router], idempotency_keys, startup=_startup, outbox=(outbox, outbox_handlers)
    )
