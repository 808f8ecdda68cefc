"""warehouse-service (port 3008): stock and its ledger, reservations for joins, group buys'
fulfilment, purchase orders of bundles from the factories and their warehouse invoices."""

from datetime import timedelta

from fastapi import FastAPI

from laku.core.app import create_service_app, run_in_background
from laku.core.services import service_url
from laku.factory.client import FactoryClient
from laku.group_buying.client import GroupBuyingClient
from laku.logistics.client import LogisticsClient
from laku.notification.client import NotificationClient
from laku.order.client import OrderClient
from laku.product.client import ProductClient
from laku.settlement.client import SettlementClient
from laku.warehouse import reservations
from laku.warehouse.metrics import BUSINESS_METRICS
from laku.warehouse.models import idempotency_keys, outbox
from laku.warehouse.routes import router
from laku.warehouse.tasks import outbox_handlers


async def _startup(app: FastAPI) -> None:
    state = app.state
    transport = (state.http, state.service_tokens)

    def url(name: str) -> str:
        return service_url(name, state.settings)

    state.products = ProductClient(url("product"), *transport)
    state.factories = FactoryClient(url("factory"), *transport)
    state.group_buying = GroupBuyingClient(url("group-buying"), *transport)
    state.notifications = NotificationClient(url("notification"), *transport)
    state.orders = OrderClient(url("order"), *transport)
    state.logistics = LogisticsClient(url("logistics"), *transport)
    state.settlements = SettlementClient(url("settlement"), *transport)
    state.reservation_desk = reservations.ReservationDesk(
        state.db,
        on_commit=lambda: state.outbox_relay.wake(),
        longest_hold=timedelta(seconds=state.settings.reservation_hold_seconds),
    )
    interval = state.settings.reservation_sweep_interval_seconds
    if interval > 0:
        run_in_background(
            app,
            reservations.run_hold_sweeper(state.db, timedelta(seconds=interval)),
            "hold-sweeper",
        )


def create_app() -> FastAPI:
    return create_service_app(
        "warehouse",
        routers=[router],
        idempotency_keys=idempotency_keys,
        startup=_startup,
        outbox=(outbox, outbox_handlers),
        idempotent_by_body=frozenset({"/api/reservations"}),
        metrics=BUSINESS_METRICS,
    )
