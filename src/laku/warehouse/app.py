"""warehouse-service (port 3008): stock and its ledger, reservations for joins, group buys'
fulfilment, purchase orders of bundles from the factories and their warehouse invoices."""

from datetime import timedelta

from fastapi import FastAPI

from laku.core.app import create_service_app, run_in_background, service_client
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
    state.products = service_client(app, ProductClient, "product")
    state.factories = service_client(app, FactoryClient, "factory")
    state.group_buying = service_client(app, GroupBuyingClient, "group-buying")
    state.notifications = service_client(app, NotificationClient, "notification")
    state.orders = service_client(app, OrderClient, "order")
    state.logistics = service_client(app, LogisticsClient, "logistics")
    state.settlements = service_client(app, SettlementClient, "settlement")
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
        [router],
        idempotency_keys,
        startup=_startup,
        outbox=(outbox, outbox_handlers),
        idempotent_by_body=frozenset({"/api/reservations"}),
        metrics=BUSINESS_METRICS,
    )
