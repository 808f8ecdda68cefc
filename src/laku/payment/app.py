"""payment-service (port 3006): escrow payments backed by Xendit invoices; when their group buy
closes, refunded into buyers' wallets or released."""

from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI

from laku.core.app import create_service_app
from laku.core.outbox import Handler
from laku.core.services import service_url
from laku.group_buying.client import GroupBuyingClient, PaymentEvent
from laku.notification.client import NotificationClient
from laku.payment.closing import CREDIT_REFUNDS, EXPIRE_INVOICE, ClosingDeliveries
from laku.payment.metrics import BUSINESS_METRICS
from laku.payment.models import idempotency_keys, outbox
from laku.payment.notices import RefundNotices
from laku.payment.routes import router
from laku.payment.service import REPORT_PAYMENT_EVENT, Payments
from laku.providers.xendit.client import XenditClient
from laku.wallet.client import WalletClient


async def _startup(app: FastAPI) -> None:
    state = app.state
    state.group_buying = GroupBuyingClient(
        service_url("group-buying", state.settings), state.http, state.service_tokens
    )
    state.wallet = WalletClient(
        service_url("wallet", state.settings), state.http, state.service_tokens
    )
    state.notifications = NotificationClient(
        service_url("notification", state.settings), state.http, state.service_tokens
    )
    state.payments = Payments(
        state.db,
        XenditClient(state.http, state.settings),
        default_invoice_duration_seconds=state.settings.invoice_duration_seconds,
        on_commit=lambda: state.outbox_relay.wake(),
    )


def _outbox_handlers(app: FastAPI) -> Mapping[str, Handler]:
    group_buying: GroupBuyingClient = app.state.group_buying
    closing = ClosingDeliveries(app.state.db, app.state.wallet, app.state.payments)
    refund_notices = RefundNotices(app.state.db, app.state.notifications)

    async def report_payment_event(_: int, payload: dict[str, Any]) -> None:
        event = PaymentEvent.model_validate(payload)
        # One key per payment and status: however often this is retried, it is applied once.
        await group_buying.report_payment(
            event, idempotency_key=f"payment-event:{event.payment_id}:{event.status}"
        )

    async def credit_refunds(row_id: int, payload: dict[str, Any]) -> None:
        await closing.credit_refunds(row_id, payload)
        # The buyers are told once the money is in their wallets. Until they are, the delivery
        # is retried: the wallet answers the credit from its record, and nobody is told twice.
        await refund_notices.tell_credited(row_id, payload)

    return {
        REPORT_PAYMENT_EVENT: report_payment_event,
        CREDIT_REFUNDS: credit_refunds,
        EXPIRE_INVOICE: closing.expire_invoice,
    }


def create_app() -> FastAPI:
    return create_service_app(
        "payment",
        routers=[router],
        idempotency_keys=idempotency_keys,
        startup=_startup,
        outbox=(outbox, _outbox_handlers),
        # A payment is idempotent by its caller's reference (the same reference, the same one).
        idempotent_by_body=frozenset({"/api/payments"}),
        metrics=BUSINESS_METRICS,
    )
