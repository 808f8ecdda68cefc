"""Shipments: booking an order's courier with Biteship (one order, or a group buy's ready
orders in parcels), and reading them.

A shipment row is claimed (committed, `creating`) before Biteship is asked to book the courier,
so a retry or a second call at once never books a second courier while the first is being
booked.
"""

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from laku.address.client import AddressClient, AddressOut
from laku.core.db import Database
from laku.core.errors import Conflict, InvalidInput, NotFound, UpstreamUnavailable
from laku.core.problems import problem
from laku.core.rows import page
from laku.core.security import Principal
from laku.core.settings import Settings
from laku.logistics.models import Shipment
from laku.logistics.rules import ABANDONED_AFTER, CREATING, shipment_status
from laku.logistics.schemas import BulkShipmentsOut, ParcelOut, ShipmentCreate, UnbookedOrderOut
from laku.order.client import OrderClient, OrderOut, OrderStatus
from laku.providers.biteship.client import (
    BiteshipClient,
    BiteshipError,
    Contact,
    CourierRate,
    RateItem,
)
from laku.providers.http import provider_failure

log = structlog.get_logger()


ShippingProviderUnavailable = problem(
    UpstreamUnavailable, "shipping_provider_unavailable", "The shipping provider is unavailable"
)
ShippingRejectedByProvider = problem(
    InvalidInput, "shipping_rejected_by_provider", "The shipping provider refused the request"
)
OrderNotReady = problem(Conflict, "order_not_ready", "The order's goods are not in hand yet")


def shipping_failure(exc: BiteshipError) -> UpstreamUnavailable | InvalidInput:
    return provider_failure(
        exc, refused=ShippingRejectedByProvider, unavailable=ShippingProviderUnavailable
    )


def order_not_found() -> NotFound:
    return NotFound("No such order", code="order_not_found")


def shipment_not_found() -> NotFound:
    return NotFound("No such shipment", code="shipment_not_found")


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


@dataclass(frozen=True, kw_only=True)
class Shipping:
    """What quoting a parcel and booking it both use: order-service, address-service, Biteship
    and the warehouse's settings."""

    orders: OrderClient
    addresses: AddressClient
    biteship: BiteshipClient
    settings: Settings

    async def destination(self, order: OrderOut, address_id: uuid.UUID | None) -> AddressOut:
        """The order's buyer's address `address_id`, else their default address."""
        if address_id is not None:
            address = await self.addresses.get_address(address_id)
            if address is None or address.user_id != order.user_id:
                raise NotFound("The buyer has no such address", code="address_not_found")
            return address
        address = await self.addresses.get_default_address(order.user_id)
        if address is None:
            raise Conflict("The buyer has no address to ship to", code="no_delivery_address")
        return address

    def items(self, orders: Sequence[OrderOut]) -> list[RateItem]:
        """The orders' items as a parcel's: each unit weighs what the settings say."""
        grams = self.settings.shipping_weight_per_unit_grams
        return [
            RateItem(name=item.name, value=item.unit_price, quantity=item.quantity, weight=grams)
            for order in orders
            for item in order.items
        ]

    async def prices(
        self, destination_postal_code: str, couriers: list[str], items: list[RateItem]
    ) -> list[CourierRate]:
        """Each service of `couriers` and its price for the parcel, from the warehouse."""
        try:
            return await self.biteship.rates(
                origin_postal_code=self.settings.warehouse_postal_code,
                destination_postal_code=destination_postal_code,
                couriers=couriers,
                items=items,
            )
        except BiteshipError as exc:
            raise shipping_failure(exc) from exc


class Shipments:
    """Booking, which calls order-service, address-service and Biteship between
    transactions."""

    def __init__(self, db: Database, shipping: Shipping):
        self._db = db
        self._shipping = shipping

    async def create_shipment(self, request: ShipmentCreate) -> BookedShipment:
        """Book the courier for a `processing` order; the order's shipment if it has one."""
        existing = await self._shipment_of(request.order_id)
        if existing is not None and existing.status != CREATING:
            return BookedShipment(self._same_booking(existing, request), created=False)
        if existing is not None and not _abandoned(existing):
            raise _in_progress()
        order = await self._shipping.orders.get_order(request.order_id)
        if order is None:
            raise order_not_found()
        if order.status != OrderStatus.PROCESSING:
            raise Conflict(
                f"Order {order.id} is {order.status}; only a processing order ships",
                code="order_not_shippable",
            )
        if order.ready_to_ship_at is None:
            raise OrderNotReady(
                f"Order {order.order_number}'s goods are not in hand yet; it ships once they are"
            )
        address = await self._shipping.destination(order, request.address_id)
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
            booked = await self._shipping.biteship.create_order(
                reference_id=str(lead.id),
                origin=Contact(
                    name=self._shipping.settings.warehouse_name,
                    phone=self._shipping.settings.warehouse_phone,
                    address=self._shipping.settings.warehouse_address,
                    postal_code=self._shipping.settings.warehouse_postal_code,
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
                items=self._shipping.items([order for _, order in claimed]),
            )
        except BiteshipError as exc:
            log.warning("shipment_booking_failed", order_id=str(lead.id), error=str(exc))
            if exc.status is not None:  # answered: nothing was booked, so nothing is kept
                await self._release_claims([shipment.id for shipment, _ in claimed])
            raise shipping_failure(exc) from exc
        shipments = []
        async with self._db.sessions.begin() as session:
            for index, (claim, _) in enumerate(claimed):
                shipment = await session.get_one(Shipment, claim.id, with_for_update=True)
                shipment.biteship_order_id = booked.id
                shipment.biteship_tracking_id = booked.courier.tracking_id
                shipment.tracking_number = booked.courier.waybill_id
                shipment.price = booked.price if index == 0 else 0
                shipment.status = shipment_status(booked.status)
                shipments.append(shipment)
        return shipments

    async def book_session(self, group_session_id: uuid.UUID) -> BulkShipmentsOut:
        """Book every ready, unbooked order of the group buy: orders to one address with one
        courier go as one parcel; the courier is the buyer's choice on the order, else the
        cheapest service of the configured couriers. Orders booked before are counted, not
        booked again; an order without an address, or a parcel Biteship refuses, is listed
        in `unbooked` (an admin books it later). Biteship unavailable raises (retry: what was
        booked stays booked), and so do orders another call is booking right now."""
        orders = [
            order
            for order in await self._shipping.orders.session_orders(
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
                addresses[order.user_id] = await self._shipping.addresses.get_default_address(
                    order.user_id
                )
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
        pricing = await self._shipping.prices(
            address.postal_code,
            self._shipping.settings.shipping_couriers,
            self._shipping.items(orders),
        )
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
            "origin_postal_code": self._shipping.settings.warehouse_postal_code,
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


def _abandoned(shipment: Shipment) -> bool:
    return datetime.now(UTC) - shipment.updated_at > ABANDONED_AFTER


def _in_progress() -> Conflict:
    return Conflict(
        "The order's shipment is being booked; try again shortly",
        code="shipment_in_progress",
        retry_after=5,
    )


# --- reads ---------------------------------------------------------------------------------


def visible(shipment: Shipment | None, principal: Principal) -> Shipment:
    if shipment is None or (not principal.is_privileged and shipment.user_id != principal.user_id):
        raise shipment_not_found()
    return shipment


async def get_shipment(
    session: AsyncSession, shipment_id: uuid.UUID, principal: Principal
) -> Shipment:
    return visible(await session.get(Shipment, shipment_id), principal)


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
    return await page(
        session, query, Shipment.created_at.desc(), Shipment.id, limit=limit, offset=offset
    )
