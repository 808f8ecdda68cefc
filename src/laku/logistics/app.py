"""logistics-service (port 3011): shipping rates, shipments booked with Biteship, tracking from
Biteship's status webhooks, and the orders moved to shipped and delivered."""

from collections.abc import Mapping

from fastapi import FastAPI

from laku.address.client import AddressClient
from laku.core.app import create_service_app
from laku.core.outbox import Handler
from laku.core.services import service_url
from laku.logistics.models import idempotency_keys, outbox
from laku.logistics.routes import router
from laku.logistics.service import (
    MARK_ORDER_DELIVERED,
    MARK_ORDER_SHIPPED,
    Logistics,
    OrderMoves,
)
from laku.order.client import OrderClient
from laku.providers.biteship.client import BiteshipClient


async def _startup(app: FastAPI) -> None:
    state = app.state
    transport = (state.http, state.service_tokens)
    state.logistics = Logistics(
        state.db,
        orders=OrderClient(service_url("order", state.settings), *transport),
        addresses=AddressClient(service_url("address", state.settings), *transport),
        biteship=BiteshipClient(state.http, state.settings),
        settings=state.settings,
        on_commit=lambda: state.outbox_relay.wake(),
    )


def _outbox_handlers(app: FastAPI) -> Mapping[str, Handler]:
    moves = OrderMoves(app.state.logistics.orders)
    return {MARK_ORDER_SHIPPED: moves.mark_shipped, MARK_ORDER_DELIVERED: moves.mark_delivered}


def create_app() -> FastAPI:
    return create_service_app(
        "logistics",
        routers=[router],
        idempotency_keys=idempotency_keys,
        startup=_startup,
        outbox=(outbox, _outbox_handlers),
        # A shipment is idempotent by its order (one shipment per order).
        idempotent_by_body=frozenset({"/api/shipments"}),
    )
