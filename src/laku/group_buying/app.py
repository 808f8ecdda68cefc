import uuid
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import structlog
from fastapi import FastAPI

from laku.core.app import create_service_app, run_in_background
from laku.core.http import ServiceCallError
from laku.core.outbox import Batched, Handler
from laku.core.services import service_url
from laku.group_buying.closing import Closer, run_schedule
from laku.group_buying.join import JoinSaga
from laku.group_buying.metrics import BUSINESS_METRICS
from laku.group_buying.models import idempotency_keys, outbox
from laku.group_buying.notices import NOTIFY_BUYERS, NOTIFY_SESSION_OUTCOME, BuyerNotices
from laku.group_buying.routes import router
from laku.group_buying.sessions import (
    EXPIRE_PAYMENT,
    REFUND_LATE_PAYMENT,
    RELEASE_RESERVATION,
    SETTLE_CANCELLED_SESSION,
)
from laku.notification.client import NotificationClient
from laku.order.client import OrderClient
from laku.payment.client import PaymentClient
from laku.product.client import ProductClient
from laku.warehouse.client import WarehouseClient

log = structlog.get_logger()


async def _startup(app: FastAPI) -> None:
    state = app.state
    transport = (state.http, state.service_tokens)

    def url(name: str) -> str:
        return service_url(name, state.settings)

    # Sessions and bundle compositions name products and variants; product-service is asked.
    state.product_client = ProductClient(url("product"), *transport)
    state.warehouse = WarehouseClient(url("warehouse"), *transport)
    state.payments = PaymentClient(url("payment"), *transport)
    state.notices = BuyerNotices(state.db, NotificationClient(url("notification"), *transport))
    state.join_saga = JoinSaga(
        db=state.db,
        warehouse=state.warehouse,
        payments=state.payments,
        wake_outbox=lambda: state.outbox_relay.wake(),
        invoice_duration=timedelta(seconds=state.settings.invoice_duration_seconds),
    )
    state.closer = Closer(
        db=state.db,
        warehouse=state.warehouse,
        payments=state.payments,
        orders=OrderClient(url("order"), *transport),
        lease=timedelta(seconds=state.settings.close_claim_lease_seconds),
    )
    interval = state.settings.close_interval_seconds
    if interval > 0:
        run_in_background(
            app, run_schedule(state.closer, timedelta(seconds=interval)), name="close-schedule"
        )


def _outbox_handlers(app: FastAPI) -> Mapping[str, Handler | Batched]:
    state = app.state

    async def release_reservation(_: int, payload: dict[str, Any]) -> None:
        try:
            await state.warehouse.release(payload["reference"])
        except ServiceCallError as exc:
            if exc.status >= 500:
                raise
            # Refused for good (e.g. already deducted): repeating would not change that.
            log.warning("release_refused", reference=payload["reference"], code=exc.code)

    async def settle_cancelled_session(_: int, payload: dict[str, Any]) -> None:
        session_id = uuid.UUID(payload["sessionId"])
        try:
            await state.closer.settle_cancelled(session_id)
        except ServiceCallError as exc:
            if exc.status >= 500:
                raise
            # Refused for good (a payment not refundable): repeating would not change that.
            log.error("cancel_settlement_refused", session_id=str(session_id), code=exc.code)

    async def refund_late_payment(_: int, payload: dict[str, Any]) -> None:
        participant_id = uuid.UUID(payload["participantId"])
        try:
            await state.closer.refund_late_payment(participant_id)
        except ServiceCallError as exc:
            if exc.status >= 500:
                raise
            # e.g. `payment_not_refundable`: the payment is not paid with escrow held.
            log.error("late_refund_refused", participant_id=str(participant_id), code=exc.code)

    async def expire_payment(_: int, payload: dict[str, Any]) -> None:
        payment_id = uuid.UUID(payload["paymentId"])
        try:
            await state.payments.expire_payment(
                payment_id, idempotency_key=f"expire-payment:{payment_id}"
            )
        except ServiceCallError as exc:
            if exc.status >= 500:
                raise
            # `payment_already_paid`: its PAID event records the payment on the cancelled
            # participant, whose money is then owed back.
            log.warning("expire_refused", payment_id=str(payment_id), code=exc.code)

    return {
        RELEASE_RESERVATION: release_reservation,
        EXPIRE_PAYMENT: expire_payment,
        SETTLE_CANCELLED_SESSION: settle_cancelled_session,
        REFUND_LATE_PAYMENT: refund_late_payment,
        NOTIFY_BUYERS: Batched(state.notices.send),
        NOTIFY_SESSION_OUTCOME: state.notices.send_session_outcome,
    }


def create_app() -> FastAPI:
    return create_service_app(
        "group-buying",
        routers=[router],
        idempotency_keys=idempotency_keys,
        startup=_startup,
        outbox=(outbox, _outbox_handlers),
        metrics=BUSINESS_METRICS,
    )
