"""Tracking: Biteship's status webhooks applied to shipments, and the orders moved to shipped
and delivered through the outbox.

Each webhook records its tracking event once and enqueues the order's move in the same
transaction, so an order-service outage delays the move and never loses it.
"""

import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import structlog
from sqlalchemy import exists, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from laku.core.db import Database
from laku.core.outbox import enqueue
from laku.core.security import Principal
from laku.logistics.models import Shipment, TrackingEvent, outbox
from laku.logistics.rules import COURIER_HAS_PARCEL, DELIVERED, shipment_status
from laku.logistics.schemas import BiteshipWebhook
from laku.logistics.shipments import ShippingProviderUnavailable, visible
from laku.logistics.tasks import MARK_ORDER_DELIVERED, MARK_ORDER_SHIPPED
from laku.providers.biteship.client import (
    ORDER_STATUSES,
    BiteshipClient,
    BiteshipError,
    BiteshipOrder,
)

log = structlog.get_logger()

WebhookOutcome = Literal["processed", "duplicate", "ignored"]


class Tracking:
    """Applies Biteship's webhooks, reading each order back from Biteship between
    transactions. `on_commit` is called after a transaction that enqueued outbox rows."""

    def __init__(self, db: Database, *, biteship: BiteshipClient, on_commit: Callable[[], None]):
        self._db = db
        self._biteship = biteship
        self._on_commit = on_commit

    async def apply_webhook(self, webhook: BiteshipWebhook) -> WebhookOutcome:
        """Record an `order.status` once and move the shipment and its order; take the
        waybill of `order.waybill_id`. The webhook is only a hint: the order is read back from
        Biteship first, and only a status Biteship confirms (the order's status now, or one in
        its tracking history, at Biteship's time) moves anything; the waybill too is
        Biteship's. Anything else, an order that is not ours, or a status Biteship does not
        confirm is acknowledged and ignored (Biteship would retry anything but a 2xx);
        Biteship unreachable answers 503, so that Biteship sends it again."""
        if webhook.event not in ("order.status", "order.waybill_id") or not webhook.order_id:
            return "ignored"
        async with self._db.sessions() as session:
            # A parcel of several orders is one Biteship order: every shipment in it moves.
            rows = (
                await session.execute(
                    select(Shipment.id, Shipment.order_id)
                    .where(Shipment.biteship_order_id == webhook.order_id)
                    .order_by(Shipment.id)
                )
            ).all()
        known = [row.id for row in rows]
        orders = {str(row.order_id) for row in rows}
        if not known:
            log.info("biteship_webhook_for_unknown_order", biteship_order_id=webhook.order_id)
            return "ignored"
        order = await self._read_order(webhook.order_id)
        if order.id != webhook.order_id or order.reference_id not in orders:
            log.error(
                "biteship_order_does_not_match_shipment",
                shipment_ids=[str(shipment_id) for shipment_id in known],
                biteship_order_id=order.id,
                reference_id=order.reference_id,
            )
            return "ignored"
        status = shipment_status(webhook.status or "")
        occurred_at: datetime | None = None
        if webhook.event == "order.status":
            if status not in ORDER_STATUSES:
                log.warning("biteship_webhook_unknown_status", status=webhook.status)
                return "ignored"
            confirmed, occurred_at = await self._confirmed_at(order, status, webhook.updated_at)
            if not confirmed:
                log.warning(
                    "biteship_webhook_status_not_confirmed",
                    shipment_id=str(known[0]),
                    biteship_order_id=order.id,
                    reported=webhook.status,
                    biteship_status=order.status,
                )
                return "ignored"
        enqueued = False
        outcome: WebhookOutcome = "duplicate"
        async with self._db.sessions.begin() as session:
            shipments = (
                await session.scalars(
                    select(Shipment)
                    .where(Shipment.id.in_(known))
                    .order_by(Shipment.id)
                    .with_for_update()
                )
            ).all()
            for shipment in shipments:
                if order.courier.waybill_id and shipment.tracking_number is None:
                    shipment.tracking_number = order.courier.waybill_id
            if webhook.event == "order.waybill_id":
                return "processed"
            for shipment in shipments:
                if not await self._record_event(session, shipment, status, occurred_at):
                    continue
                outcome = "processed"
                move = self._move_order(shipment, status)
                if move:
                    await enqueue(session, outbox, move, self._order_move(shipment))
                    enqueued = True
        if enqueued:
            self._on_commit()
        return outcome

    async def _confirmed_at(
        self, order: BiteshipOrder, status: str, reported_at: datetime | None
    ) -> tuple[bool, datetime | None]:
        """Whether Biteship says the order took `status`, and when. The order's current status
        is taken at the webhook's time (never later than now: a time from the future would pin
        the shipment's status against every real one after it); an earlier one (a webhook
        delivered late), or one reported without a time, at its time in the order's tracking
        history (None: the current status, with no time anywhere)."""
        current = shipment_status(order.status) == status
        if current and reported_at is not None:
            return True, min(reported_at, datetime.now(UTC))
        if not order.courier.tracking_id:
            return current, None
        try:
            tracking = await self._biteship.get_tracking(order.courier.tracking_id)
        except BiteshipError as exc:
            raise _read_back_failed(order.id, exc) from exc
        if tracking.order_id not in (None, order.id):
            return False, None
        times = [
            entry.updated_at
            for entry in tracking.history
            if shipment_status(entry.status) == status
        ]
        return current or bool(times), max(times, default=None)

    async def _read_order(self, biteship_order_id: str) -> BiteshipOrder:
        try:
            return await self._biteship.get_order(biteship_order_id)
        except BiteshipError as exc:
            raise _read_back_failed(biteship_order_id, exc) from exc

    async def _record_event(
        self, session: AsyncSession, shipment: Shipment, status: str, occurred_at: datetime | None
    ) -> bool:
        """False when this event was recorded already. A webhook without its time is taken as
        happening now, and once per status."""
        if occurred_at is None:
            seen = await session.scalar(
                select(
                    exists().where(
                        TrackingEvent.shipment_id == shipment.id, TrackingEvent.status == status
                    )
                )
            )
            if seen:
                return False
            occurred_at = datetime.now(UTC)
        recorded = await session.scalar(
            insert(TrackingEvent)
            .values(
                shipment_id=shipment.id,
                status=status,
                note=ORDER_STATUSES[status],
                occurred_at=occurred_at,
            )
            .on_conflict_do_nothing()
            .returning(TrackingEvent.id)
        )
        if recorded is None:
            return False
        if occurred_at >= shipment.status_at:  # a late, older event leaves the status be
            shipment.status = status
            shipment.status_at = occurred_at
        return True

    @staticmethod
    def _move_order(shipment: Shipment, status: str) -> str | None:
        """The order's move this status calls for, if it was not asked for yet: delivered
        (which ships it first if need be) or shipped."""
        now = datetime.now(UTC)
        if status == DELIVERED and shipment.order_delivered_requested_at is None:
            shipment.order_delivered_requested_at = now
            shipment.order_shipped_requested_at = shipment.order_shipped_requested_at or now
            return MARK_ORDER_DELIVERED
        if status in COURIER_HAS_PARCEL and shipment.order_shipped_requested_at is None:
            shipment.order_shipped_requested_at = now
            return MARK_ORDER_SHIPPED
        return None

    @staticmethod
    def _order_move(shipment: Shipment) -> dict[str, Any]:
        return {
            "order_id": str(shipment.order_id),
            "shipment_id": str(shipment.id),
            # A courier that issues its waybill late: Biteship's order id stands in for it.
            "tracking_number": shipment.tracking_number or shipment.biteship_order_id,
            "courier": f"{shipment.courier_company} {shipment.courier_type}",
        }


def _read_back_failed(biteship_order_id: str, exc: BiteshipError) -> ShippingProviderUnavailable:
    log.warning(
        "biteship_order_read_back_failed", biteship_order_id=biteship_order_id, error=str(exc)
    )
    return ShippingProviderUnavailable(
        f"The order could not be read back from Biteship: {exc.message}", retry_after=5
    )


# --- reads ---------------------------------------------------------------------------------


async def events_of(session: AsyncSession, shipment_id: uuid.UUID) -> Sequence[TrackingEvent]:
    return (
        await session.scalars(
            select(TrackingEvent)
            .where(TrackingEvent.shipment_id == shipment_id)
            .order_by(TrackingEvent.occurred_at, TrackingEvent.id)
        )
    ).all()


async def track(session: AsyncSession, tracking_number: str, principal: Principal) -> Shipment:
    """The shipment with the waybill (the first of a parcel's, for a parcel of several
    orders) that the caller may see."""
    query = select(Shipment).where(Shipment.tracking_number == tracking_number)
    if not principal.is_privileged:
        query = query.where(Shipment.user_id == principal.user_id)
    shipment = await session.scalar(query.order_by(Shipment.created_at, Shipment.id).limit(1))
    return visible(shipment, principal)
