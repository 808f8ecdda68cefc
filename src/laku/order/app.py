"""order-service (port 3005): orders and order items created when a group buy succeeds, and
their lifecycle (shipped, delivered, cancelled and refunded)."""

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI

from laku.core.app import create_service_app
from laku.core.outbox import Batched, Handler, Row
from laku.core.services import service_url
from laku.group_buying.client import GroupBuyingClient
from laku.notification.client import NotificationClient
from laku.order import service
from laku.order.models import idempotency_keys, outbox
from laku.order.routes import router
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


def _outbox_handlers(app: FastAPI) -> Mapping[str, Handler | Batched]:
    state = app.state

    async def refund_cancelled_order(_: int, payload: dict[str, Any]) -> None:
        await service.refund_cancelled(state.db, state.payments, uuid.UUID(payload["orderId"]))

    async def tell_buyers(rows: Sequence[Row]) -> None:
        await service.tell_buyers(state.db, state.notifications, rows)

    return {
        service.REFUND_CANCELLED_ORDER: refund_cancelled_order,
        service.TELL_BUYER: Batched(tell_buyers),
    }


def create_app() -> FastAPI:
    return create_service_app(
        "order",
        routers=[router],
        idempotency_keys=idempotency_keys,
        startup=_startup,
        outbox=(outbox, _outbox_handlers),
    )
