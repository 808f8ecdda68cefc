"""order-service (port 3005): orders and order items created when a group buy succeeds, and
their lifecycle (shipped, delivered, cancelled and refunded)."""

from fastapi import FastAPI

from laku.core.app import create_service_app
from laku.core.services import service_url
from laku.group_buying.client import GroupBuyingClient
from laku.notification.client import NotificationClient
from laku.order.models import idempotency_keys, outbox
from laku.order.routes import router
from laku.order.tasks import outbox_handlers
from laku.payment.client import PaymentClient
from laku.product.client import ProductClient


async def _startup(app: FastAPI) -> None:
    state = app.state
    transport = (state.http, state.service_tokens)
    state.group_buying = GroupBuyingClient(service_url("group-buying", state.settings), *transport)
    state.products = ProductClient(service_url("product", state.settings), *transport)
    state.payments = PaymentClient(service_url("payment", state.settings), *transport)
    state.notifications = NotificationClient(
        service_url("notification", state.settings), *transport
    )


def create_app() -> FastAPI:
    return create_service_app(
        "order",
        routers=[router],
        idempotency_keys=idempotency_keys,
        startup=_startup,
        outbox=(outbox, outbox_handlers),
    )
