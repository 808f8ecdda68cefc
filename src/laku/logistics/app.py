"""logistics-service (port 3011): shipping rates, shipments booked with Biteship, tracking from
Biteship's status webhooks, and the orders moved to shipped and delivered."""

from collections.abc import Mapping

from fastapi import FastAPI

from laku.address.client import AddressClient
from laku.core.app import create_service_app, service_client
from laku.core.outbox import Handler
from laku.logistics import tasks
from laku.logistics.models import idempotency_keys, outbox
from laku.logistics.routes import router
from laku.logistics.shipments import Shipments, Shipping
from laku.logistics.tracking import Tracking
from laku.order.client import OrderClient
from laku.providers.biteship.client import BiteshipClient


async def _startup(app: FastAPI) -> None:
    state = app.state
    biteship = BiteshipClient(state.http, state.settings)
    state.shipping = Shipping(
        orders=service_client(app, OrderClient, "order"),
        addresses=service_client(app, AddressClient, "address"),
        biteship=biteship,
        settings=state.settings,
    )
    state.shipments = Shipments(state.db, state.shipping)
    state.tracking = Tracking(
        state.db, biteship=biteship, on_commit=lambda: state.outbox_relay.wake()
    )


def _outbox_handlers(app: FastAPI) -> Mapping[str, Handler]:
    return tasks.handlers(app.state.shipping.orders)


def create_app() -> FastAPI:
    return create_service_app(
        "logistics",
        [router],
        idempotency_keys,
        startup=_startup,
        outbox=(outbox, _outbox_handlers),
        # A shipment is idempotent by its order (one shipment per order).
        idempotent_by_body=frozenset({"/api/shipments"}),
    )
