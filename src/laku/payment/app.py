"""payment-service (port 3006): escrow payments backed by Xendit invoices; when their group buy
closes, refunded into buyers' wallets or released. Refunds of escrow already released to a
factory are reported to settlement-service."""

from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI

from laku.core.app import create_service_app, run_in_background
from laku.core.outbox import Handler
from laku.core.services import service_url
from laku.group_buying.client import GroupBuyingClient, PaymentEvent, PaymentEventStatus
from laku.notification.client import NotificationClient
from laku.payment.closing import (
    CREDIT_REFUNDS,
    EXPIRE_INVOICE,
    REPORT_ESCROW_REFUNDS,
    ClosingDeliveries,
    refund_unclaimed,
)
from laku.payment.metrics import BUSINESS_METRICS
from laku.payment.models import idempotency_keys, outbox
from laku.payment.notices import RefundNotices
from laku.payment.routes import audit_router, router
from laku.payment.service import REPORT_PAYMENT_EVENT, Payments, settle_overdue_every
from laku.providers.xendit.client import XenditClient
from laku.settlement.client import EscrowRefundsReport, SettlementClient
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
    state.settlements = SettlementClient(
        service_url("settlement", state.settings), state.http, state.service_tokens
    )
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
    group_buying: GroupBuyingClient = app.state.group_buying
    settlements: SettlementClient = app.state.settlements
    closing = ClosingDeliveries(app.state.db, app.state.wallet, app.state.payments)
    refund_notices = RefundNotices(app.state.db, app.state.notifications)

    async def report_payment_event(_: int, payload: dict[str, Any]) -> None:
        event = PaymentEvent.model_validate(payload)
        # One key per payment and status: however often this is retried, it is applied once.
        answer = await group_buying.report_payment(
            event, idempotency_key=f"payment-event:{event.payment_id}:{event.status}"
        )
        if answer.outcome == "unknown" and event.status == PaymentEventStatus.PAID:
            # Paid for a join group-buying never recorded: nobody else will give it back.
            async with app.state.db.sessions() as session:
                if await refund_unclaimed(session, event.payment_id):
                    app.state.outbox_relay.wake()

    async def credit_refunds(row_id: int, payload: dict[str, Any]) -> None:
        await closing.credit_refunds(row_id, payload)
        # The buyers are told once the money is in their wallets. Until they are, the delivery
        # is retried: the wallet answers the credit from its record, and nobody is told twice.
        await refund_notices.tell_credited(row_id, payload)

    async def report_escrow_refunds(row_id: int, payload: dict[str, Any]) -> None:
        # Settlement accounts for each refund once by its id; any failure is retried.
        await settlements.report_escrow_refunds(
            EscrowRefundsReport.model_validate(payload),
            idempotency_key=f"escrow-refunds:{row_id}",
        )

    return {
        REPORT_PAYMENT_EVENT: report_payment_event,
        CREDIT_REFUNDS: credit_refunds,
        EXPIRE_INVOICE: closing.expire_invoice,
        REPORT_ESCROW_REFUNDS: report_escrow_refunds,
    }


def create_app() -> FastAPI:
    return create_service_app(
        "payment",
        routers=[router, audit_router],
        idempotency_keys=idempotency_keys,
        startup=_startup,
        outbox=(outbox, _outbox_handlers),
        # A payment is idempotent by its caller's reference (the same reference, the same one).
        idempotent_by_body=frozenset({"/api/payments"}),
        metrics=BUSINESS_METRICS,
    )
