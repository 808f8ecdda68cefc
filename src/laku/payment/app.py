"""payment-service (port 3006): escrow payments backed by Xendit invoices; when their group buy
closes, refunded into buyers' wallets or released. Refunds of escrow already released to a
factory are reported to settlement-service."""

from collections.abc import Mapping

from fastapi import FastAPI

from laku.core.app import create_service_app, run_in_background, service_client
from laku.core.outbox import Handler
from laku.group_buying.client import GroupBuyingClient
from laku.notification.client import NotificationClient
from laku.payment.metrics import BUSINESS_METRICS
from laku.payment.models import idempotency_keys, outbox
from laku.payment.payments import Payments, settle_overdue_every
from laku.payment.refunds import refund_unclaimed
from laku.payment.routes import audit_router, router
from laku.payment.tasks import PaymentTasks
from laku.providers.xendit.client import XenditClient
from laku.settlement.client import SettlementClient
from laku.wallet.client import WalletClient


async def _startup(app: FastAPI) -> None:
    state = app.state
    state.payments = Payments(
        state.db,
        XenditClient(state.http, state.settings),
        default_invoice_duration_seconds=state.settings.invoice_duration_seconds,
        on_commit=lambda: state.outbox_relay.wake(),
    )
    interval = state.settings.overdue_payment_sweep_interval_seconds
    if interval > 0:
        run_in_background(
            app, settle_overdue_every(state.payments, interval), name="overdue-payment-sweep"
        )


def _outbox_handlers(app: FastAPI) -> Mapping[str, Handler]:
    state = app.state
    return PaymentTasks(
        db=state.db,
        group_buying=service_client(app, GroupBuyingClient, "group-buying"),
        wallet=service_client(app, WalletClient, "wallet"),
        settlements=service_client(app, SettlementClient, "settlement"),
        notifications=service_client(app, NotificationClient, "notification"),
        close_invoice=state.payments.close_invoice_of_expired,
        refund_unclaimed=refund_unclaimed,
        on_commit=lambda: state.outbox_relay.wake(),
    ).handlers()


def create_app() -> FastAPI:
    return create_service_app(
        "payment",
        [router, audit_router],
        idempotency_keys,
        startup=_startup,
        outbox=(outbox, _outbox_handlers),
        # A payment is idempotent by its caller's reference (the same reference, the same one).
        idempotent_by_body=frozenset({"/api/payments"}),
        metrics=BUSINESS_METRICS,
    )
