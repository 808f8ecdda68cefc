from datetime import timedelta

from fastapi import FastAPI

from laku.core.app import create_service_app, run_in_background, service_client
from laku.group_buying.closing import Closer, run_schedule
from laku.group_buying.holds import run_join_sweeper
from laku.group_buying.join import JoinSaga
from laku.group_buying.metrics import BUSINESS_METRICS
from laku.group_buying.models import idempotency_keys, outbox, rate_limits
from laku.group_buying.notices import BuyerNotices
from laku.group_buying.routes import router
from laku.group_buying.tasks import outbox_handlers
from laku.notification.client import NotificationClient
from laku.order.client import OrderClient
from laku.payment.client import PaymentClient
from laku.product.client import ProductClient
from laku.warehouse.client import WarehouseClient


async def _startup(app: FastAPI) -> None:
    state = app.state
    # Sessions and bundle compositions name products and variants; product-service is asked.
    state.product_client = service_client(app, ProductClient, "product")
    state.warehouse = service_client(app, WarehouseClient, "warehouse")
    state.payments = service_client(app, PaymentClient, "payment")
    state.notices = BuyerNotices(state.db, service_client(app, NotificationClient, "notification"))
    state.join_saga = JoinSaga(
        db=state.db,
        warehouse=state.warehouse,
        payments=state.payments,
        wake_outbox=lambda: state.outbox_relay.wake(),
        invoice_duration=timedelta(seconds=state.settings.invoice_duration_seconds),
        longest_hold=timedelta(seconds=state.settings.reservation_hold_seconds),
        hold_grace=timedelta(seconds=state.settings.reservation_hold_grace_seconds),
        limits=state.settings.rate_limits,
        max_unpaid_units=state.settings.max_unpaid_units_per_buyer_per_session,
    )
    state.closer = Closer(
        db=state.db,
        warehouse=state.warehouse,
        payments=state.payments,
        orders=service_client(app, OrderClient, "order"),
        lease=timedelta(seconds=state.settings.close_claim_lease_seconds),
    )
    interval = state.settings.close_interval_seconds
    if interval > 0:
        run_in_background(
            app, run_schedule(state.closer, timedelta(seconds=interval)), name="close-schedule"
        )
    sweep = state.settings.join_sweep_interval_seconds
    if sweep > 0:
        run_in_background(
            app,
            run_join_sweeper(state.db, timedelta(seconds=sweep), lambda: state.outbox_relay.wake()),
            name="join-sweeper",
        )


def create_app() -> FastAPI:
    return create_service_app(
        "group-buying",
        [router],
        idempotency_keys,
        startup=_startup,
        outbox=(outbox, outbox_handlers),
        rate_limits=rate_limits,
        metrics=BUSINESS_METRICS,
    )
