import asyncio
import uuid
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

import structlog
from fastapi import FastAPI

from laku.core.app import create_service_app, run_in_background
from laku.core.db import Database
from laku.core.http import ServiceCallError
from laku.core.outbox import Batched, Handler
from laku.core.services import service_url
from laku.group_buying.closing import Closer, run_schedule
from laku.group_buying.join import JoinSaga
from laku.group_buying.metrics import BUSINESS_METRICS
from laku.group_buying.models import idempotency_keys, outbox, rate_limits
from laku.group_buying.notices import NOTIFY_BUYERS, NOTIFY_SESSION_OUTCOME, BuyerNotices
from laku.group_buying.routes import router
from laku.group_buying.sessions import (
    CONFIRM_RESERVATION,
    EXPIRE_PAYMENT,
    EXPIRE_PAYMENT_BY_REFERENCE,
    REFUND_LATE_PAYMENT,
    RELEASE_RESERVATION,
    SETTLE_CANCELLED_SESSION,
    cancel_lapsed_joins,
    hold_lapsed,
    participant_reference,
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
        longest_hold=timedelta(seconds=state.settings.reservation_hold_seconds),
        hold_grace=timedelta(seconds=state.settings.reservation_hold_grace_seconds),
        limits=state.settings.rate_limits,
        max_unpaid_units=state.settings.max_unpaid_units_per_buyer_per_session,
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
    sweep = state.settings.join_sweep_interval_seconds
    if sweep > 0:
        run_in_background(
            app,
            run_join_sweeper(state.db, timedelta(seconds=sweep), lambda: state.outbox_relay.wake()),
            name="join-sweeper",
        )


async def run_join_sweeper(
    db: Database, interval: timedelta, wake_outbox: Callable[[], None]
) -> None:
    """Cancel joins whose stock hold lapsed unpaid, every `interval`, in batches."""
    batch = 500
    while True:
        await asyncio.sleep(interval.total_seconds())
        try:
            while True:
                async with db.sessions() as session:
                    cancelled = await cancel_lapsed_joins(session, batch)
                if cancelled:
                    wake_outbox()
                if cancelled < batch:
                    break
        except Exception:
            log.exception("join_sweep_failed")


def _outbox_handlers(app: FastAPI) -> Mapping[str, Handler | Batched]:
    state = app.state

    # A refusal not handled here is the outbox's to judge: retried if it may pass (an outage,
    # work in progress), else dead-lettered with its reason for an admin.
    async def release_reservation(_: int, payload: dict[str, Any]) -> None:
        await state.warehouse.release(payload["reference"])

    async def confirm_reservation(_: int, payload: dict[str, Any]) -> None:
        """A paid participant's hold must not lapse; if it already has, it gives way."""
        participant_id = uuid.UUID(payload["participantId"])
        try:
            await state.warehouse.confirm(participant_reference(participant_id))
        except ServiceCallError as exc:
            if exc.code != "reservation_released":
                raise
            async with state.db.sessions() as session:
                if await hold_lapsed(session, participant_id):
                    state.outbox_relay.wake()

    async def expire_payment_by_reference(_: int, payload: dict[str, Any]) -> None:
        """A join given up: its payment, made or not, must never be left payable."""
        try:
            await state.payments.expire_by_reference(payload["reference"])
        except ServiceCallError as exc:
            if exc.code != "payment_already_paid":
                raise  # payment_in_progress included: asked again until it is made
            # Its PAID event finds the participant cancelled, and gives the money back.

    async def settle_cancelled_session(_: int, payload: dict[str, Any]) -> None:
        await state.closer.settle_cancelled(uuid.UUID(payload["sessionId"]))

    async def refund_late_payment(_: int, payload: dict[str, Any]) -> None:
        await state.closer.refund_late_payment(uuid.UUID(payload["participantId"]))

    async def expire_payment(_: int, payload: dict[str, Any]) -> None:
        payment_id = uuid.UUID(payload["paymentId"])
        try:
            await state.payments.expire_payment(
                payment_id, idempotency_key=f"expire-payment:{payment_id}"
            )
        except ServiceCallError as exc:
            if exc.code != "payment_already_paid":
                raise
            # Nothing left to expire: its PAID event records the payment on the cancelled
            # participant, whose money is then refunded (REFUND_LATE_PAYMENT).
            log.info("expire_found_paid", payment_id=str(payment_id))

    return {
        RELEASE_RESERVATION: release_reservation,
        CONFIRM_RESERVATION: confirm_reservation,
        EXPIRE_PAYMENT_BY_REFERENCE: expire_payment_by_reference,
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
        rate_limits=rate_limits,
        metrics=BUSINESS_METRICS,
    )
