"""Shipping: rates for an order, booking its shipment with Biteship (one order, or a group
buy's ready orders in parcels), applying Biteship's status webhooks, and moving the orders to
shipped and delivered through the outbox.

A shipment row is claimed (committed, `creating`) before Biteship is asked to book the courier,
so a retry or a second call at once never books a second courier while the first is being
booked. Each webhook records its tracking event once and enqueues the order's move in the same
transaction, so an order-service outage delays the move and never loses it.
"""

import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, NoReturn

import structlog
from sqlalchemy import delete, exists, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from laku.address.client import AddressClient, AddressOut
from laku.core.db import Database
from laku.core.errors import Conflict, InvalidInput, NotFound, UpstreamUnavailable
from laku.core.http import ServiceCallError
from laku.core.outbox import FinalRefusal, enqueue
from laku.core.security import Principal
from laku.core.settings import Settings
from laku.logistics.models import Shipment, TrackingEvent, outbox
from laku.logistics.schemas import (
    BiteshipWebhook,
    BulkShipmentsOut,
    ParcelOut,
    RateOut,
    RatesOut,
    RatesRequest,
    ShipmentCreate,
    UnbookedOrderOut,
)
from laku.order.client import OrderClient, OrderOut, OrderStatus
from laku.providers.biteship.client import (
    ORDER_STATUSES,
    BiteshipClient,
    BiteshipError,
    BiteshipOrder,
    Contact,
    RateItem,
)

log = structlog.get_logger()

# Outbox kinds whose handlers move the order in order-service.
MARK_ORDER_SHIPPED = "mark_order_shipped"
MARK_ORDER_DELIVERED = "mark_order_delivered"
CREATING = "creating"
# Statuses in which the courier has the parcel: the order has shipped.
_COURIER_HAS_PARCEL = frozenset({"picked", "dropping_off", "delivered"})
# A claim left `creating` this long belongs to a booking whose process died (or whose Biteship
# call was never answered); a retry may take it over. Far longer than a Biteship call may take.
ABANDONED_AFTER = timedelta(minutes=2)
# Biteship answers these when it cannot serve us rather than because of what we asked.
_PROVIDER_SIDE_STATUSES = frozenset({401, 403, 408, 429})

WebhookOutcome = Literal["processed", "duplicate", "ignored"]


class ShippingProviderUnavailable(UpstreamUnavailable):
    code = "shipping_provider_unavailable"
    title = "The shipping provider is unavailable"


class ShippingRejectedByProvider(InvalidInput):
    code = "shipping_rejected_by_provider"
    title = "The shipping provider refused the request"


def _provider_error(exc: BiteshipError) -> ShippingProviderUnavailable | ShippingRejectedByProvider:
    if exc.status is not None and exc.status < 500 and exc.status not in _PROVIDER_SIDE_STATUSES:
        return ShippingRejectedByProvider(exc.message)
    return ShippingProviderUnavailable(f"Biteship could not be used: {exc.message}", retry_after=5)


def _order_not_found() -> NotFound:
    return NotFound("No such order", code="order_not_found")


def _shipment_not_found() -> NotFound:
    return NotFound("No such shipment", code="shipment_not_found")


def _status(reported: str) -> str:
    """Biteship's statuses in snake_case (`pickingUp` as some couriers' feeds spell it too)."""
    return re.sub(r"(?<=[a-z])([A-Z])", r"_\1", reported).lower()


def _full_address(address: AddressOut) -> str:
    return f"{address.street}, {address.city}, {address.province} {address.postal_code}"


@dataclass(frozen=True)
class BookedShipment:
    shipment: Shipment
    created: bool  # False: the order had this shipment already


@dataclass(frozen=True)
class Courier:
    company: str
    type: str


class OrderNotReady(Conflict):
    code = "order_not_ready"
    title = "The order's goods are not in hand yet"


class Logistics:
    """The operations that call order-service, address-service and Biteship between
    transactions. `on_commit` is called after a transaction that enqueued outbox rows."""

    def __init__(
        self,
        db: Database,
        *,
        orders: OrderClient,
        addresses: AddressClient,
        biteship: BiteshipClient,
        settings: Settings,
        on_commit: Callable[[], None],
    ):
        self._db = db
        self.orders = orders
        self._addresses = addresses
        self._biteship = biteship
        self._settings = settings
        self._on_commit = on_commit

    # --- rates ---------------------------------------------------------------------------

    async def rates(self, principal: Principal, request: RatesRequest) -> RatesOut:
        """The couriers' prices for the order's parcel from the warehouse to the buyer."""
        order = await self._order(request.order_id, principal)
        address = await self._destination(order, request.address_id)
        origin = self._settings.warehouse_postal_code
        for sent, derived in (
            (request.origin_postal_code, origin),
            (request.destination_postal_code, address.postal_code),
        ):
            if sent is not None and sent != derived:
                raise Conflict(
                    f"Postal code {sent} is not the shipment's {derived}",
                    code="postal_code_mismatch",
                )
        items = self._items(order)
        try:
            pricing = await self._biteship.rates(
                origin_postal_code=origin,
                destination_postal_code=address.postal_code,
                couriers=request.couriers,
                items=items,
            )
        except BiteshipError as exc:
            raise _provider_error(exc) from exc
        return RatesOut(
            order_id=order.id,
            address_id=address.id,
            origin_postal_code=origin,
            destination_postal_code=address.postal_code,
            weight_grams=sum(item.weight * item.quantity for item in items),
            rates=[
                RateOut(
                    courier_company=rate.courier_code,
                    courier_name=rate.courier_name,
                    courier_type=rate.courier_service_code,
                    courier_service_name=rate.courier_service_name,
                    description=rate.description,
                    duration=rate.duration,
                    price=rate.price,
                )
                for rate in pricing
            ],
        )

    # --- shipments -----------------------------------------------------------------------

    async def create_shipment(self, request: ShipmentCreate) -> BookedShipment:
        """Book the courier for a `processing` order; the order's shipment if it has one."""
        existing = await self._shipment_of(request.order_id)
        if existing is not None and existing.status != CREATING:
            return BookedShipment(self._same_booking(existing, request), created=False)
        if existing is not None and not _abandoned(existing):
            raise _in_progress()
        order = await self.orders.get_order(request.order_id)
        if order is None:
            raise _order_not_found()
        if order.status != OrderStatus.PROCESSING:
            raise Conflict(
                f"Order {order.id} is {order.status}; only a processing order ships",
                code="order_not_shippable",
            )
        if order.ready_to_ship_at is None:
            raise OrderNotReady(
                f"Order {order.order_number}'s goods are not in hand yet; it ships once they are"
            )
        address = await self._destination(order, request.address_id)
        courier = Courier(request.courier_company, request.courier_type)
        claimed = await self._claim(order, address, courier)
        if claimed.status != CREATING:  # another call booked it meanwhile
            return BookedShipment(self._same_booking(claimed, request), created=False)
        [shipment] = await self._book([(claimed, order)], address, courier)
        return BookedShipment(shipment, created=True)

    async def _book(
        self, claimed: list[tuple[Shipment, OrderOut]], address: AddressOut, courier: Courier
    ) -> list[Shipment]:
        """Book one Biteship order carrying the claimed orders' items; the first shipment
        carries its price. A refusal releases the claims (nothing was booked)."""
        lead = claimed[0][1]
        try:
            booked = await self._biteship.create_order(
                reference_id=str(lead.id),
                origin=Contact(
                    name=self._settings.warehouse_name,
                    phone=self._settings.warehouse_phone,
                    address=self._settings.warehouse_address,
                    postal_code=self._settings.warehouse_postal_code,
                ),
                destination=Contact(
                    name=address.recipient_name,
                    phone=address.phone,
                    address=_full_address(address),
                    postal_code=address.postal_code,
                    note=address.notes,
                ),
                courier_company=courier.company,
                courier_type=courier.type,
                items=[item for _, order in claimed for item in self._items(order)],
            )
        except BiteshipError as exc:
            log.warning("shipment_booking_failed", order_id=str(lead.id), error=str(exc))
            if exc.status is not None:  # answered: nothing was booked, so nothing is kept
                await self._release_claims([shipment.id for shipment, _ in claimed])
            raise _provider_error(exc) from exc
        shipments = []
        async with self._db.sessions.begin() as session:
            for index, (claim, _) in enumerate(claimed):
                shipment = await session.get_one(Shipment, claim.id, with_for_update=True)
                shipment.biteship_order_id = booked.id
                shipment.biteship_tracking_id = booked.courier.tracking_id
                shipment.tracking_number = booked.courier.waybill_id
                shipment.price = booked.price if index == 0 else 0
                shipment.status = _status(booked.status)
                shipments.append(shipment)
        return shipments

    # --- a group buy's shipments ---------------------------------------------------------

    async def book_session(self, group_session_id: uuid.UUID) -> BulkShipmentsOut:
        """Book every ready, unbooked order of the group buy: orders to one address with one
        courier go as one parcel; the courier is the buyer's choice on the order, else the
        cheapest service of the configured couriers. Orders booked before are counted, not
        booked again; an order without an address, or a parcel Biteship refuses, is listed
        in `unbooked` (an admin books it later). Biteship unavailable raises (retry: what was
        booked stays booked), and so do orders another call is booking right now."""
        orders = [
            order
            for order in await self.orders.session_orders(
                group_session_id, status=OrderStatus.PROCESSING
            )
            if order.ready_to_ship_at is not None
        ]
        async with self._db.sessions() as session:
            booked_before = set(
                await session.scalars(
                    select(Shipment.order_id).where(
                        Shipment.order_id.in_([order.id for order in orders]),
                        Shipment.status != CREATING,
                    )
                )
            )
        unbooked: list[UnbookedOrderOut] = []
        addresses: dict[uuid.UUID, AddressOut | None] = {}
        parcels: dict[tuple[uuid.UUID, Courier | None], list[OrderOut]] = {}
        for order in sorted(orders, key=lambda o: o.id):
            if order.id in booked_before:
                continue
            if order.user_id not in addresses:
                addresses[order.user_id] = await self._addresses.get_default_address(order.user_id)
            address = addresses[order.user_id]
            if address is None:
                unbooked.append(
                    UnbookedOrderOut(
                        order_id=order.id,
                        code="no_delivery_address",
                        detail="The buyer has no address to ship to",
                    )
                )
                continue
            choice = order.courier_choice
            courier = Courier(choice.courier_company, choice.courier_type) if choice else None
            parcels.setdefault((address.id, courier), []).append(order)

        booked: list[ParcelOut] = []
        in_progress = False
        for (_, chosen), members in parcels.items():
            address = addresses[members[0].user_id]
            assert address is not None
            try:
                courier = chosen or await self._cheapest(members, address)
                claimed, busy = await self._claim_parcel(members, address, courier)
                in_progress |= busy
                if not claimed:
                    continue
                shipments = await self._book(claimed, address, courier)
            except ShippingRejectedByProvider as exc:
                unbooked.extend(
                    UnbookedOrderOut(
                        order_id=order.id, code=exc.code, detail=exc.detail or exc.title
                    )
                    for order in members
                )
                continue
            booked.append(
                ParcelOut(
                    biteship_order_id=shipments[0].biteship_order_id or "",
                    tracking_number=shipments[0].tracking_number,
                    courier_company=courier.company,
                    courier_type=courier.type,
                    price=sum(shipment.price or 0 for shipment in shipments),
                    order_ids=[shipment.order_id for shipment in shipments],
                )
            )
        if in_progress:
            raise _in_progress()
        return BulkShipmentsOut(
            group_session_id=group_session_id,
            parcels=booked,
            booked=sum(len(parcel.order_ids) for parcel in booked),
            existing=len(booked_before),
            unbooked=unbooked,
        )

    async def _cheapest(self, orders: Sequence[OrderOut], address: AddressOut) -> Courier:
        """The cheapest service of the configured couriers for the parcel."""
        try:
            pricing = await self._biteship.rates(
                origin_postal_code=self._settings.warehouse_postal_code,
                destination_postal_code=address.postal_code,
                couriers=self._settings.shipping_couriers,
                items=[item for order in orders for item in self._items(order)],
            )
        except BiteshipError as exc:
            raise _provider_error(exc) from exc
        if not pricing:
            raise ShippingRejectedByProvider("No configured courier serves this destination")
        cheapest = min(pricing, key=lambda r: (r.price, r.courier_code, r.courier_service_code))
        return Courier(cheapest.courier_code, cheapest.courier_service_code)

    async def _claim_parcel(
        self, orders: Sequence[OrderOut], address: AddressOut, courier: Courier
    ) -> tuple[list[tuple[Shipment, OrderOut]], bool]:
        """The parcel's orders whose shipment rows this call claimed (`creating`): new, or
        taken over from an abandoned booking. Orders booked meanwhile, or being booked by
        another call (then the second value is True), are left out."""
        by_id = {order.id: order for order in orders}
        async with self._db.sessions.begin() as session:
            inserted = await session.scalars(
                insert(Shipment)
                .values(
                    [
                        {
                            "id": uuid.uuid4(),
                            "order_id": order.id,
                            "status": CREATING,
                            "status_at": func.now(),
                            **self._details(order, address, courier),
                        }
                        for order in orders
                    ]
                )
                .on_conflict_do_nothing(index_elements=[Shipment.order_id])
                .returning(Shipment.order_id)
            )
            mine = set(inserted)
            rows = await session.scalars(
                select(Shipment)
                .where(Shipment.order_id.in_(list(by_id)))
                .order_by(Shipment.order_id)
                .with_for_update()
            )
            claimed = []
            in_progress = False
            for shipment in rows:
                if shipment.status != CREATING:
                    continue  # booked by another call meanwhile
                if shipment.order_id not in mine:
                    if not _abandoned(shipment):
                        in_progress = True
                        continue
                    details = self._details(by_id[shipment.order_id], address, courier)
                    for name, value in details.items():
                        setattr(shipment, name, value)
                    shipment.updated_at = datetime.now(UTC)
                claimed.append((shipment, by_id[shipment.order_id]))
        return claimed, in_progress

    async def _shipment_of(self, order_id: uuid.UUID) -> Shipment | None:
        async with self._db.sessions() as session:
            return await session.scalar(select(Shipment).where(Shipment.order_id == order_id))

    @staticmethod
    def _same_booking(shipment: Shipment, request: ShipmentCreate) -> Shipment:
        if (shipment.courier_company, shipment.courier_type) != (
            request.courier_company,
            request.courier_type,
        ):
            raise Conflict(
                f"Order {shipment.order_id} ships with {shipment.courier_company} "
                f"{shipment.courier_type} already (shipment {shipment.id})",
                code="order_already_has_shipment",
            )
        return shipment

    def _details(self, order: OrderOut, address: AddressOut, courier: Courier) -> dict[str, Any]:
        """What a shipment row of the order records of its booking."""
        return {
            "user_id": order.user_id,
            "courier_company": courier.company,
            "courier_type": courier.type,
            "origin_postal_code": self._settings.warehouse_postal_code,
            "destination_address_id": address.id,
            "destination_name": address.recipient_name,
            "destination_phone": address.phone,
            "destination_address": _full_address(address),
            "destination_postal_code": address.postal_code,
            "destination_note": address.notes,
        }

    async def _claim(self, order: OrderOut, address: AddressOut, courier: Courier) -> Shipment:
        """The order's shipment row, `creating` on behalf of this call (new, or taken over from
        an abandoned booking), or the row another call booked meanwhile; 409 while another
        call is booking it."""
        details = self._details(order, address, courier)
        async with self._db.sessions.begin() as session:
            inserted = await session.scalar(
                insert(Shipment)
                # `status_at` is the claim's time, before Biteship's: every status Biteship
                # reports afterwards is newer.
                .values(
                    id=uuid.uuid4(),
                    order_id=order.id,
                    status=CREATING,
                    status_at=func.now(),
                    **details,
                )
                .on_conflict_do_nothing(index_elements=[Shipment.order_id])
                .returning(Shipment.id)
            )
            shipment = await session.scalar(
                select(Shipment).where(Shipment.order_id == order.id).with_for_update()
            )
            assert shipment is not None  # inserted, or there already
            if inserted is None and shipment.status == CREATING:
                if not _abandoned(shipment):
                    raise _in_progress()
                for name, value in details.items():
                    setattr(shipment, name, value)
                shipment.updated_at = datetime.now(UTC)
        return shipment

    async def _release_claims(self, shipment_ids: list[uuid.UUID]) -> None:
        async with self._db.sessions.begin() as session:
            await session.execute(
                delete(Shipment).where(Shipment.id.in_(shipment_ids), Shipment.status == CREATING)
            )

    # --- Biteship's webhook --------------------------------------------------------------

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
        status = _status(webhook.status or "")
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
        current = _status(order.status) == status
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
        times = [entry.updated_at for entry in tracking.history if _status(entry.status) == status]
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
        if status == "delivered" and shipment.order_delivered_requested_at is None:
            shipment.order_delivered_requested_at = now
            shipment.order_shipped_requested_at = shipment.order_shipped_requested_at or now
            return MARK_ORDER_DELIVERED
        if status in _COURIER_HAS_PARCEL and shipment.order_shipped_requested_at is None:
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

    # --- shared ----------------------------------------------------------------------------

    async def _order(self, order_id: uuid.UUID, principal: Principal) -> OrderOut:
        """The order if the caller may see it; to another buyer it does not exist."""
        order = await self.orders.get_order(order_id)
        if order is None or (not principal.is_privileged and order.user_id != principal.user_id):
            raise _order_not_found()
        return order

    async def _destination(self, order: OrderOut, address_id: uuid.UUID | None) -> AddressOut:
        """The order's buyer's address `address_id`, else their default address."""
        if address_id is not None:
            address = await self._addresses.get_address(address_id)
            if address is None or address.user_id != order.user_id:
                raise NotFound("The buyer has no such address", code="address_not_found")
            return address
        address = await self._addresses.get_default_address(order.user_id)
        if address is None:
            raise Conflict("The buyer has no address to ship to", code="no_delivery_address")
        return address

    def _items(self, order: OrderOut) -> list[RateItem]:
        grams = self._settings.shipping_weight_per_unit_grams
        return [
            RateItem(name=item.name, value=item.unit_price, quantity=item.quantity, weight=grams)
            for item in order.items
        ]


def _read_back_failed(biteship_order_id: str, exc: BiteshipError) -> ShippingProviderUnavailable:
    log.warning(
        "biteship_order_read_back_failed", biteship_order_id=biteship_order_id, error=str(exc)
    )
    return ShippingProviderUnavailable(
        f"The order could not be read back from Biteship: {exc.message}", retry_after=5
    )


def _abandoned(shipment: Shipment) -> bool:
    return datetime.now(UTC) - shipment.updated_at > ABANDONED_AFTER


def _in_progress() -> Conflict:
    return Conflict(
        "The order's shipment is being booked; try again shortly",
        code="shipment_in_progress",
        retry_after=5,
    )


# --- moving the order (outbox deliveries) -------------------------------------------------


class OrderMoves:
    """Tells order-service what the courier did. Each move has one idempotency key per
    shipment, so however often it is retried (or both run at once) it is applied once."""

    def __init__(self, orders: OrderClient):
        self._orders = orders

    async def mark_shipped(self, _: int, payload: dict[str, Any]) -> None:
        try:
            await self._ship(payload)
        except ServiceCallError as exc:
            if not _invalid_transition(exc):
                raise
            order = await self._orders.get_order(uuid.UUID(payload["order_id"]))
            if order is None or order.status != OrderStatus.DELIVERED:  # delivered: done
                self._give_up(payload, order, "shipped")

    async def mark_delivered(self, _: int, payload: dict[str, Any]) -> None:
        order_id = uuid.UUID(payload["order_id"])
        try:
            order = await self._orders.get_order(order_id)
            if order is not None and order.status == OrderStatus.PROCESSING:
                order = await self._ship(payload)
            if order is not None and order.status == OrderStatus.SHIPPED:
                order = await self._orders.mark_delivered(
                    order_id, idempotency_key=f"shipment:{payload['shipment_id']}:delivered"
                )
        except ServiceCallError as exc:
            if not _invalid_transition(exc):
                raise
            order = await self._orders.get_order(order_id)
        if order is None or order.status != OrderStatus.DELIVERED:
            self._give_up(payload, order, "delivered")

    async def _ship(self, payload: dict[str, Any]) -> OrderOut:
        return await self._orders.mark_shipped(
            uuid.UUID(payload["order_id"]),
            tracking_number=payload["tracking_number"],
            courier=payload["courier"],
            idempotency_key=f"shipment:{payload['shipment_id']}:shipped",
        )

    @staticmethod
    def _give_up(payload: dict[str, Any], order: OrderOut | None, move: str) -> NoReturn:
        """The order cannot take the move (cancelled or refunded while the parcel travelled,
        or gone): retrying would not change that, so the row is dead-lettered for an admin."""
        state = f"is {order.status}" if order else "does not exist"
        raise FinalRefusal(
            f"order {payload['order_id']} {state}: cannot be marked {move} "
            f"(shipment {payload['shipment_id']})"
        )


def _invalid_transition(exc: ServiceCallError) -> bool:
    return exc.status == 409 and exc.code == "invalid_order_transition"


# --- reads ---------------------------------------------------------------------------------


async def events_of(session: AsyncSession, shipment_id: uuid.UUID) -> Sequence[TrackingEvent]:
    return (
        await session.scalars(
            select(TrackingEvent)
            .where(TrackingEvent.shipment_id == shipment_id)
            .order_by(TrackingEvent.occurred_at, TrackingEvent.id)
        )
    ).all()


def _visible(shipment: Shipment | None, principal: Principal) -> Shipment:
    if shipment is None or (not principal.is_privileged and shipment.user_id != principal.user_id):
        raise _shipment_not_found()
    return shipment


async def get_shipment(
    session: AsyncSession, shipment_id: uuid.UUID, principal: Principal
) -> Shipment:
    return _visible(await session.get(Shipment, shipment_id), principal)


async def track(session: AsyncSession, tracking_number: str, principal: Principal) -> Shipment:
    """The shipment with the waybill (the first of a parcel's, for a parcel of several
    orders) that the caller may see."""
    query = select(Shipment).where(Shipment.tracking_number == tracking_number)
    if not principal.is_privileged:
        query = query.where(Shipment.user_id == principal.user_id)
    shipment = await session.scalar(query.order_by(Shipment.created_at, Shipment.id).limit(1))
    return _visible(shipment, principal)


async def list_shipments(
    session: AsyncSession,
    principal: Principal,
    *,
    order_id: uuid.UUID | None,
    limit: int,
    offset: int,
) -> tuple[Sequence[Shipment], int]:
    """Newest first; a buyer's own only."""
    query = select(Shipment)
    if order_id is not None:
        query = query.where(Shipment.order_id == order_id)
    if not principal.is_privileged:
        query = query.where(Shipment.user_id == principal.user_id)
    total = await session.scalar(select(func.count()).select_from(query.subquery()))
    rows = await session.scalars(
        query.order_by(Shipment.created_at.desc(), Shipment.id).limit(limit).offset(offset)
    )
    return rows.all(), total or 0
