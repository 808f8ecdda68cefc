"""Stock, reservations, the movement ledger, automatic reorders and purchase orders.

Every change to a variant's stock locks its inventory row, writes the change and its ledger
row(s) in one transaction, so on-hand and reserved stock always equal the ledger's sums.
"""

import asyncio
import math
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from sqlalchemy import func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from laku.core.db import Database
from laku.core.errors import Conflict, DomainError, InvalidInput, NotFound
from laku.core.money import format_rupiah
from laku.core.outbox import enqueue
from laku.factory.client import FactoryClient
from laku.group_buying.client import BundleCompositionOut
from laku.notification.client import NotificationRequest
from laku.product.client import ProductDetailOut
from laku.warehouse import dispatch
from laku.warehouse.invoices import InvoiceTerms, invoice_received
from laku.warehouse.models import (
    Fulfilment,
    Inventory,
    PurchaseOrder,
    PurchaseOrderLine,
    Reservation,
    StockMovement,
    outbox,
    purchase_order_number,
)
from laku.warehouse.schemas import (
    AdjustmentCreate,
    InventoryCreate,
    ReservationCreate,
    ReservationOut,
    StockStatus,
)

log = structlog.get_logger()

REORDER = "reorder"
NOTIFY_FACTORY = "notify_factory"
COMPLETE_FULFILMENT = "complete_fulfilment"
OPEN_STATUSES = ("open", "shipped")


class InsufficientStock(Conflict):
    code = "insufficient_stock"
    title = "Not enough stock"


def stock_status(available: int, reorder_threshold: int) -> StockStatus:
    if available <= 0:
        return StockStatus.OUT_OF_STOCK
    if available <= reorder_threshold:
        return StockStatus.LOW_STOCK
    return StockStatus.IN_STOCK


def crossed_threshold(before: int, after: int, threshold: int) -> bool:
    """Available stock fell to the reorder threshold or below with this change."""
    return before > threshold >= after


def bundles_to_cover(shortages: dict[uuid.UUID, int], units_in_bundle: dict[uuid.UUID, int]) -> int:
    """Whole bundles that cover every variant's shortage: max of ceil(shortage / units)."""
    return max(
        (math.ceil(units / units_in_bundle[variant]) for variant, units in shortages.items()),
        default=0,
    )


def _movement(
    variant_id: uuid.UUID,
    kind: str,
    *,
    quantity_delta: int = 0,
    reserved_delta: int = 0,
    reference: str | None = None,
    reason: str | None = None,
) -> dict[str, Any]:
    return {
        "variant_id": variant_id,
        "kind": kind,
        "quantity_delta": quantity_delta,
        "reserved_delta": reserved_delta,
        "reference": reference,
        "reason": reason,
    }


async def _record(session: AsyncSession, movements: list[dict[str, Any]]) -> None:
    if movements:
        await session.execute(insert(StockMovement), movements)


async def _request_reorder(session: AsyncSession, product_id: uuid.UUID) -> None:
    await enqueue(session, outbox, REORDER, {"productId": str(product_id)})


async def _locked_inventory(session: AsyncSession, variant_id: uuid.UUID) -> Inventory:
    inventory = await session.scalar(
        select(Inventory).where(Inventory.variant_id == variant_id).with_for_update()
    )
    if inventory is None:
        raise NotFound("No inventory for this variant", code="inventory_not_found")
    return inventory


# Inventory ---------------------------------------------------------------------------------


async def create_inventory(
    session: AsyncSession, items: list[InventoryCreate], products: dict[uuid.UUID, ProductDetailOut]
) -> list[Inventory]:
    """Seed step 1.4. `products` are the items' products as product-service knows them."""
    variant_ids = [item.variant_id for item in items]
    if len(set(variant_ids)) != len(variant_ids):
        raise InvalidInput("A variant appears twice", code="duplicate_variant")
    for item in items:
        product = products.get(item.product_id)
        if product is None:
            raise InvalidInput(f"Unknown product {item.product_id}", code="unknown_product")
        if item.variant_id not in {variant.id for variant in product.variants}:
            raise InvalidInput(
                f"{item.variant_id} is not a variant of product {item.product_id}",
                code="unknown_variant",
            )
    taken = await session.scalars(
        select(Inventory.variant_id).where(Inventory.variant_id.in_(variant_ids))
    )
    if already := list(taken):
        raise Conflict(f"Inventory already exists for {already[0]}", code="inventory_exists")

    rows = [
        Inventory(
            product_id=item.product_id,
            variant_id=item.variant_id,
            factory_id=products[item.product_id].factory_id,
            quantity=item.quantity,
            reserved_quantity=0,
            max_stock_level=item.max_stock_level,
            reorder_threshold=item.reorder_threshold,
            surplus_quantity=0,
        )
        for item in items
    ]
    session.add_all(rows)
    await session.flush()
    await _record(
        session,
        [
            _movement(
                item.variant_id, "initial", quantity_delta=item.quantity, reason="initial stock"
            )
            for item in items
            if item.quantity
        ],
    )
    for product_id in {
        item.product_id for item in items if item.quantity <= item.reorder_threshold
    }:
        await _request_reorder(session, product_id)
    await session.commit()
    for row in rows:
        await session.refresh(row)
    return rows


async def get_inventory(session: AsyncSession, variant_id: uuid.UUID) -> Inventory:
    inventory = await session.scalar(select(Inventory).where(Inventory.variant_id == variant_id))
    if inventory is None:
        raise NotFound("No inventory for this variant", code="inventory_not_found")
    return inventory


async def list_inventory(
    session: AsyncSession, product_id: uuid.UUID | None = None, *, low_only: bool = False
) -> list[Inventory]:
    query = select(Inventory).order_by(Inventory.product_id, Inventory.created_at, Inventory.id)
    if product_id is not None:
        query = query.where(Inventory.product_id == product_id)
    if low_only:
        query = query.where(Inventory.available_quantity <= Inventory.reorder_threshold)
    return list(await session.scalars(query))


async def adjust(
    session: AsyncSession, variant_id: uuid.UUID, adjustment: AdjustmentCreate
) -> Inventory:
    """A counted correction of on-hand stock (damage, loss, recount)."""
    inventory = await _locked_inventory(session, variant_id)
    before = inventory.available_quantity
    # Stock counted lost is lost even when promised: available then falls below zero, and the
    # shortage is bought in bundles when the group buy closes.
    if inventory.quantity + adjustment.delta < 0:
        raise Conflict("On-hand stock cannot fall below zero", code="adjustment_below_zero")
    inventory.quantity += adjustment.delta
    await _record(
        session,
        [
            _movement(
                variant_id, "adjust", quantity_delta=adjustment.delta, reason=adjustment.reason
            )
        ],
    )
    if crossed_threshold(before, before + adjustment.delta, inventory.reorder_threshold):
        await _request_reorder(session, inventory.product_id)
    await session.commit()
    await session.refresh(inventory)
    return inventory


async def movements(
    session: AsyncSession, variant_id: uuid.UUID, limit: int, offset: int
) -> list[StockMovement]:
    await get_inventory(session, variant_id)
    return list(
        await session.scalars(
            select(StockMovement)
            .where(StockMovement.variant_id == variant_id)
            .order_by(StockMovement.id.desc())
            .limit(limit)
            .offset(offset)
        )
    )


@dataclass(frozen=True)
class LedgerCheck:
    variant_id: uuid.UUID
    quantity: int
    ledger_quantity: int
    reserved_quantity: int
    ledger_reserved: int
    surplus_quantity: int
    ledger_surplus: int

    @property
    def consistent(self) -> bool:
        return (self.quantity, self.reserved_quantity, self.surplus_quantity) == (
            self.ledger_quantity,
            self.ledger_reserved,
            self.ledger_surplus,
        )


async def ledger_check(
    session: AsyncSession, product_id: uuid.UUID | None = None
) -> list[LedgerCheck]:
    sums = (
        select(
            StockMovement.variant_id,
            func.sum(StockMovement.quantity_delta).label("quantity"),
            func.sum(StockMovement.reserved_delta).label("reserved"),
            func.sum(-StockMovement.quantity_delta)
            .filter(StockMovement.kind == "surplus")
            .label("surplus"),
        )
        .group_by(StockMovement.variant_id)
        .subquery()
    )
    query = select(Inventory, sums).outerjoin(sums, sums.c.variant_id == Inventory.variant_id)
    if product_id is not None:
        query = query.where(Inventory.product_id == product_id)
    return [
        LedgerCheck(
            variant_id=row.Inventory.variant_id,
            quantity=row.Inventory.quantity,
            ledger_quantity=row.quantity or 0,
            reserved_quantity=row.Inventory.reserved_quantity,
            ledger_reserved=row.reserved or 0,
            surplus_quantity=row.Inventory.surplus_quantity,
            ledger_surplus=row.surplus or 0,
        )
        for row in (await session.execute(query.order_by(Inventory.variant_id))).all()
    ]


# Reservations ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reserved:
    reservation: ReservationOut
    created: bool  # False: the reference was reserved before


ReservationResult = Reserved | DomainError


async def reserve_batch(
    session: AsyncSession, variant_id: uuid.UUID, requests: list[ReservationCreate]
) -> list[ReservationResult]:
    """Reserve for many requests of one variant under one row lock, first come first served.

    A reference seen before (in the database or earlier in the batch) is answered with its
    reservation, whatever stock is left: reserving is idempotent by reference."""
    references = [request.reference for request in requests]
    known = {
        row.reference: row
        for row in (
            await session.execute(
                select(
                    Reservation.reference,
                    Reservation.variant_id,
                    Reservation.quantity,
                    Reservation.status,
                ).where(Reservation.reference.in_(references))
            )
        ).all()
    }
    inventory = (
        await session.execute(
            select(
                Inventory.product_id,
                Inventory.available_quantity,
                Inventory.reorder_threshold,
            )
            .where(Inventory.variant_id == variant_id)
            .with_for_update()
        )
    ).first()
    if inventory is None:
        missing = NotFound("No inventory for this variant", code="inventory_not_found")
        return [missing for _ in requests]

    available = inventory.available_quantity
    accepted: dict[str, ReservationCreate] = {}
    # Per request: (status, created by this batch), or the error refusing it.
    outcomes: list[tuple[str, bool] | DomainError] = []
    for request in requests:
        if request.reference in accepted or request.reference in known:
            prior = accepted.get(request.reference) or known[request.reference]
            if (prior.variant_id, prior.quantity) != (request.variant_id, request.quantity):
                outcomes.append(
                    Conflict("Reference used for another reservation", code="reference_reused")
                )
            else:
                status = "reserved" if request.reference in accepted else prior.status
                outcomes.append((status, False))
        elif request.quantity > available:
            outcomes.append(
                InsufficientStock(f"Only {max(available, 0)} available, {request.quantity} asked")
            )
        else:
            available -= request.quantity
            accepted[request.reference] = request
            outcomes.append(("reserved", True))

    if accepted:
        reserved_total = sum(request.quantity for request in accepted.values())
        await session.execute(
            insert(Reservation),
            [
                {
                    "id": uuid.uuid4(),
                    "reference": r.reference,
                    "variant_id": variant_id,
                    "quantity": r.quantity,
                    "group_reference": r.group,
                    "status": "reserved",
                }
                for r in accepted.values()
            ],
        )
        await _record(
            session,
            [
                _movement(variant_id, "reserve", reserved_delta=r.quantity, reference=r.reference)
                for r in accepted.values()
            ],
        )
        await session.execute(
            update(Inventory)
            .where(Inventory.variant_id == variant_id)
            .values(
                reserved_quantity=Inventory.reserved_quantity + reserved_total,
                updated_at=func.now(),
            )
        )
        if crossed_threshold(inventory.available_quantity, available, inventory.reorder_threshold):
            await _request_reorder(session, inventory.product_id)
    await session.commit()
    return [
        outcome
        if isinstance(outcome, DomainError)
        else Reserved(
            ReservationOut(
                reference=request.reference,
                variant_id=request.variant_id,
                quantity=request.quantity,
                status=outcome[0],
                available_quantity=available,
            ),
            created=outcome[1],
        )
        for request, outcome in zip(requests, outcomes, strict=True)
    ]


class ReservationDesk:
    """Coalesces concurrent reservations of one variant into one transaction.

    One hot variant is one hot row: a transaction per request queues every request on that
    row's lock. Here requests that arrive while a batch is being written wait for the next
    batch, so the lock is taken once per batch instead of once per request."""

    def __init__(self, db: Database, on_commit: Callable[[], None], max_batch: int = 500):
        self._db = db
        self._on_commit = on_commit
        self._max_batch = max_batch
        self._draining: set[asyncio.Task[None]] = set()
        self._waiting: dict[
            uuid.UUID, list[tuple[ReservationCreate, asyncio.Future[Reserved]]]
        ] = {}

    async def reserve(self, request: ReservationCreate) -> Reserved:
        future: asyncio.Future[Reserved] = asyncio.get_running_loop().create_future()
        queue = self._waiting.get(request.variant_id)
        if queue is None:
            self._waiting[request.variant_id] = [(request, future)]
            task = asyncio.create_task(self._drain(request.variant_id))
            self._draining.add(task)  # a reference keeps the task alive until it finishes
            task.add_done_callback(self._draining.discard)
        else:
            queue.append((request, future))
        return await future

    async def _drain(self, variant_id: uuid.UUID) -> None:
        queue = self._waiting[variant_id]
        try:
            while queue:
                batch = queue[: self._max_batch]
                del queue[: self._max_batch]
                try:
                    async with self._db.sessions() as session:
                        results = await reserve_batch(
                            session, variant_id, [request for request, _ in batch]
                        )
                except Exception as exc:
                    for _, future in batch:
                        future.set_exception(exc)
                    continue
                self._on_commit()
                for (_, future), result in zip(batch, results, strict=True):
                    if isinstance(result, DomainError):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        finally:
            del self._waiting[variant_id]


async def _locked_reservation(
    session: AsyncSession, reference: str
) -> tuple[Reservation, Inventory]:
    """The reservation and its variant's stock, locked in the order every writer uses:
    the inventory row first, then reservations."""
    variant_id = await session.scalar(
        select(Reservation.variant_id).where(Reservation.reference == reference)
    )
    if variant_id is None:
        raise NotFound("No reservation with this reference", code="reservation_not_found")
    inventory = await _locked_inventory(session, variant_id)
    reservation = await session.scalar(
        select(Reservation).where(Reservation.reference == reference).with_for_update()
    )
    assert reservation is not None  # reservations are never deleted
    return reservation, inventory


async def get_reservation(session: AsyncSession, reference: str) -> ReservationOut:
    reservation = await session.scalar(
        select(Reservation).where(Reservation.reference == reference)
    )
    if reservation is None:
        raise NotFound("No reservation with this reference", code="reservation_not_found")
    inventory = await get_inventory(session, reservation.variant_id)
    return _reservation_out(reservation, inventory)


def _reservation_out(reservation: Reservation, inventory: Inventory) -> ReservationOut:
    return ReservationOut(
        reference=reservation.reference,
        variant_id=reservation.variant_id,
        quantity=reservation.quantity,
        status=reservation.status,
        available_quantity=inventory.available_quantity,
    )


async def release(session: AsyncSession, reference: str) -> ReservationOut:
    """Give reserved stock back (a join that failed, an unpaid invoice, a failed group)."""
    reservation, inventory = await _locked_reservation(session, reference)
    if reservation.status == "deducted":
        raise Conflict("This reservation was already taken from stock", code="reservation_deducted")
    if reservation.status == "reserved":
        reservation.status = "released"
        inventory.reserved_quantity -= reservation.quantity
        await _record(
            session,
            [
                _movement(
                    inventory.variant_id,
                    "release",
                    reserved_delta=-reservation.quantity,
                    reference=reference,
                )
            ],
        )
        await session.commit()
        await session.refresh(inventory)
    return _reservation_out(reservation, inventory)


async def deduct(session: AsyncSession, reference: str) -> ReservationOut:
    """Take reserved stock out of the warehouse (it is being shipped to the buyer)."""
    reservation, inventory = await _locked_reservation(session, reference)
    if reservation.status == "released":
        raise Conflict("This reservation was released", code="reservation_released")
    if reservation.status == "reserved" and inventory.quantity < reservation.quantity:
        raise Conflict("Stock on hand is short of this reservation", code="stock_short")
    if reservation.status == "reserved":
        reservation.status = "deducted"
        inventory.quantity -= reservation.quantity
        inventory.reserved_quantity -= reservation.quantity
        await _record(
            session,
            [
                _movement(
                    inventory.variant_id,
                    "deduct",
                    quantity_delta=-reservation.quantity,
                    reserved_delta=-reservation.quantity,
                    reference=reference,
                )
            ],
        )
        await session.commit()
        await session.refresh(inventory)
    return _reservation_out(reservation, inventory)


# Groups of reservations (one group buy) ----------------------------------------------------


async def _lock_product_stock(
    session: AsyncSession, product_id: uuid.UUID
) -> dict[uuid.UUID, Inventory]:
    rows = await session.scalars(
        select(Inventory)
        .where(Inventory.product_id == product_id)
        .order_by(Inventory.variant_id)
        .with_for_update()
    )
    return {row.variant_id: row for row in rows}


async def _take_group(
    session: AsyncSession, group: str, status: str, references: list[str] | None = None
) -> list[Any]:
    """Move the group's still-reserved reservations (all, or those named) to `status`."""
    chosen = [Reservation.group_reference == group, Reservation.status == "reserved"]
    if references is not None:
        chosen.append(Reservation.reference.in_(references))
    return list(
        (
            await session.execute(
                update(Reservation)
                .where(*chosen)
                .values(status=status, updated_at=func.now())
                .returning(Reservation.variant_id, Reservation.quantity, Reservation.reference)
            )
        ).all()
    )


def _units_by_variant(rows: Iterable[Any]) -> dict[uuid.UUID, int]:
    units: dict[uuid.UUID, int] = {}
    for row in rows:
        units[row.variant_id] = units.get(row.variant_id, 0) + row.quantity
    return units


async def release_group(
    session: AsyncSession, group: str, references: list[str] | None = None
) -> tuple[int, int]:
    """Give back the reservations of a group buy in one transaction: all of them (it failed
    or was cancelled) or those named (its unpaid joins at close). Returns (reservations
    released, units); releasing again releases nothing."""
    product_ids = await session.scalars(
        select(Inventory.product_id)
        .join(Reservation, Reservation.variant_id == Inventory.variant_id)
        .where(Reservation.group_reference == group)
        .distinct()
    )
    stock: dict[uuid.UUID, Inventory] = {}
    for product_id in sorted(product_ids):
        stock |= await _lock_product_stock(session, product_id)
    rows = await _take_group(session, group, "released", references)
    for variant_id, units in _units_by_variant(rows).items():
        stock[variant_id].reserved_quantity -= units
    await _record(
        session,
        [
            _movement(
                row.variant_id, "release", reserved_delta=-row.quantity, reference=row.reference
            )
            for row in rows
        ],
    )
    await session.commit()
    return len(rows), sum(row.quantity for row in rows)


async def fulfil_group(
    session: AsyncSession,
    group: str,
    product: ProductDetailOut,
    composition: BundleCompositionOut | None,
    shipping_cost_per_bundle: int,
) -> Fulfilment:
    """Take a closed group buy's reservations out of stock. Where stock is short (counted
    stock lost after it was promised), wait for bundles: those already on order, else a new
    purchase order covering every short variant. Safe to call again: a fulfilled group stays
    fulfilled, a waiting one completes once the stock is in."""
    stock = await _lock_product_stock(session, product.id)
    fulfilment = await session.get(Fulfilment, group)
    if fulfilment is not None and fulfilment.status == "fulfilled":
        await session.commit()
        return fulfilment
    demand = _units_by_variant(
        (
            await session.execute(
                select(Reservation.variant_id, Reservation.quantity).where(
                    Reservation.group_reference == group, Reservation.status == "reserved"
                )
            )
        ).all()
    )
    if fulfilment is None:
        fulfilment = Fulfilment(
            group_reference=group,
            product_id=product.id,
            status="awaiting_stock",
            units=sum(demand.values()),
        )
        session.add(fulfilment)
    deficits = {v: -stock[v].available_quantity for v in demand if stock[v].available_quantity < 0}
    if not deficits:
        rows = await _take_group(session, group, "deducted")
        for variant_id, units in _units_by_variant(rows).items():
            stock[variant_id].quantity -= units
            stock[variant_id].reserved_quantity -= units
        await _record(
            session,
            [
                _movement(
                    row.variant_id,
                    "deduct",
                    quantity_delta=-row.quantity,
                    reserved_delta=-row.quantity,
                    reference=row.reference,
                )
                for row in rows
            ],
        )
        fulfilment.status = "fulfilled"
        fulfilment.fulfilled_at = datetime.now(UTC)
        await dispatch.goods_in_hand(session, group)
        await session.commit()
        return fulfilment

    open_orders = list(
        await session.scalars(
            select(PurchaseOrder)
            .where(
                PurchaseOrder.product_id == product.id,
                PurchaseOrder.status.in_(OPEN_STATUSES),
            )
            .order_by(PurchaseOrder.created_at.desc())
        )
    )
    incoming: dict[uuid.UUID, int] = {}
    for lines in (await purchase_order_lines(session, [po.id for po in open_orders])).values():
        for line in lines:
            incoming[line.variant_id] = incoming.get(line.variant_id, 0) + line.quantity
    uncovered = {v: units - incoming.get(v, 0) for v, units in deficits.items()}
    uncovered = {v: units for v, units in uncovered.items() if units > 0}
    if uncovered:
        units_in_bundle = {
            item.variant_id: item.units_in_bundle
            for item in (composition.items if composition else [])
        }
        if missing := set(uncovered) - set(units_in_bundle):
            raise Conflict(
                f"Variants {sorted(map(str, missing))} are short and in no bundle",
                code="not_in_bundle",
            )
        fulfilment.purchase_order_id = await _place_purchase_order(
            session,
            product,
            units_in_bundle,
            bundles_to_cover(uncovered, units_in_bundle),
            "group_shortage",
            shipping_cost_per_bundle,
        )
    else:  # what is already on order covers it
        fulfilment.purchase_order_id = open_orders[0].id
    await session.commit()
    return fulfilment


async def get_fulfilment(session: AsyncSession, group: str) -> Fulfilment:
    fulfilment = await session.get(Fulfilment, group)
    if fulfilment is None:
        raise NotFound("This group has not been fulfilled", code="fulfilment_not_found")
    return fulfilment


# Purchase orders ---------------------------------------------------------------------------


async def raise_reorder(
    session: AsyncSession,
    product: ProductDetailOut,
    composition: BundleCompositionOut,
    shipping_cost_per_bundle: int,
) -> PurchaseOrder | None:
    """One purchase order of whole bundles lifting every low variant of the product above its
    threshold, unless an automatic reorder is already open for it (then None)."""
    units_in_bundle = {item.variant_id: item.units_in_bundle for item in composition.items}
    stock = list(
        await session.scalars(
            select(Inventory)
            .where(Inventory.product_id == product.id)
            .order_by(Inventory.variant_id)
            .with_for_update()
        )
    )
    shortages = {
        row.variant_id: row.reorder_threshold - row.available_quantity + 1
        for row in stock
        if row.available_quantity <= row.reorder_threshold and row.variant_id in units_in_bundle
    }
    bundles = bundles_to_cover(shortages, units_in_bundle)
    purchase_order_id = (
        await _place_purchase_order(
            session, product, units_in_bundle, bundles, "auto_reorder", shipping_cost_per_bundle
        )
        if bundles
        else None
    )
    if purchase_order_id is None:  # nothing is low, or a reorder is already open
        await session.rollback()
        return None
    await session.commit()
    return await get_purchase_order(session, purchase_order_id)


async def _place_purchase_order(
    session: AsyncSession,
    product: ProductDetailOut,
    units_in_bundle: dict[uuid.UUID, int],
    bundles: int,
    reason: str,
    shipping_cost_per_bundle: int,
) -> uuid.UUID | None:
    """Insert a purchase order of `bundles` whole bundles (every variant of the bundle on it) and
    queue the factory's WhatsApp; None when the one open automatic reorder already exists."""
    if product.cost_price is None:
        raise InvalidInput("The product has no cost price", code="no_cost_price")
    number = await session.scalar(purchase_order_number.next_value())
    lines = [
        {"variant_id": variant_id, "units_in_bundle": units, "quantity": units * bundles}
        for variant_id, units in units_in_bundle.items()
    ]
    goods_cost = sum(line["quantity"] for line in lines) * product.cost_price
    shipping_cost = bundles * shipping_cost_per_bundle
    purchase_order_id = uuid.uuid4()
    created = await session.scalar(
        pg_insert(PurchaseOrder)
        .values(
            id=purchase_order_id,
            number=f"PO-{datetime.now(UTC):%Y%m%d}-{number:05d}",
            factory_id=product.factory_id,
            product_id=product.id,
            reason=reason,
            bundles=bundles,
            unit_cost=product.cost_price,
            goods_cost=goods_cost,
            shipping_cost=shipping_cost,
            total_cost=goods_cost + shipping_cost,
            status="open",
        )
        .on_conflict_do_nothing()
        .returning(PurchaseOrder.id)
    )
    if created is None:
        return None
    await session.execute(
        insert(PurchaseOrderLine),
        [{"purchase_order_id": purchase_order_id, **line} for line in lines],
    )
    await enqueue(session, outbox, NOTIFY_FACTORY, {"purchaseOrderId": str(purchase_order_id)})
    log.info("purchase_order_raised", purchase_order=str(purchase_order_id), reason=reason)
    return purchase_order_id


async def get_purchase_order(session: AsyncSession, purchase_order_id: uuid.UUID) -> PurchaseOrder:
    purchase_order = await session.get(PurchaseOrder, purchase_order_id)
    if purchase_order is None:
        raise NotFound("No such purchase order", code="purchase_order_not_found")
    return purchase_order


async def purchase_order_lines(
    session: AsyncSession, purchase_order_ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, list[PurchaseOrderLine]]:
    lines: dict[uuid.UUID, list[PurchaseOrderLine]] = {}
    for line in await session.scalars(
        select(PurchaseOrderLine)
        .where(PurchaseOrderLine.purchase_order_id.in_(list(purchase_order_ids)))
        .order_by(PurchaseOrderLine.variant_id)
    ):
        lines.setdefault(line.purchase_order_id, []).append(line)
    return lines


async def list_purchase_orders(
    session: AsyncSession,
    *,
    factory_id: uuid.UUID | None,
    product_id: uuid.UUID | None,
    status: str | None,
    limit: int,
    offset: int,
) -> tuple[list[PurchaseOrder], int]:
    query = select(PurchaseOrder)
    if factory_id is not None:
        query = query.where(PurchaseOrder.factory_id == factory_id)
    if product_id is not None:
        query = query.where(PurchaseOrder.product_id == product_id)
    if status is not None:
        query = query.where(PurchaseOrder.status == status)
    total = await session.scalar(select(func.count()).select_from(query.subquery()))
    rows = await session.scalars(
        query.order_by(PurchaseOrder.created_at.desc(), PurchaseOrder.id)
        .limit(limit)
        .offset(offset)
    )
    return list(rows), total or 0


async def _locked_purchase_order(
    session: AsyncSession, purchase_order_id: uuid.UUID
) -> PurchaseOrder:
    purchase_order = await session.get(PurchaseOrder, purchase_order_id, with_for_update=True)
    if purchase_order is None:
        raise NotFound("No such purchase order", code="purchase_order_not_found")
    return purchase_order


async def ship_purchase_order(
    session: AsyncSession, purchase_order_id: uuid.UUID, tracking_number: str
) -> PurchaseOrder:
    purchase_order = await _locked_purchase_order(session, purchase_order_id)
    if purchase_order.status == "shipped" and purchase_order.tracking_number == tracking_number:
        return purchase_order
    if purchase_order.status != "open":
        raise Conflict(
            f"A {purchase_order.status} purchase order cannot be shipped", code="invalid_status"
        )
    purchase_order.status = "shipped"
    purchase_order.tracking_number = tracking_number
    purchase_order.shipped_at = datetime.now(UTC)
    await session.commit()
    return purchase_order


async def cancel_purchase_order(
    session: AsyncSession, purchase_order_id: uuid.UUID
) -> PurchaseOrder:
    purchase_order = await _locked_purchase_order(session, purchase_order_id)
    if purchase_order.status == "cancelled":
        return purchase_order
    if purchase_order.status == "received":
        raise Conflict("A received purchase order cannot be cancelled", code="invalid_status")
    purchase_order.status = "cancelled"
    purchase_order.cancelled_at = datetime.now(UTC)
    await _request_reorder(session, purchase_order.product_id)
    await session.commit()
    return purchase_order


async def receive_purchase_order(
    session: AsyncSession, purchase_order_id: uuid.UUID, invoice_terms: InvoiceTerms
) -> PurchaseOrder:
    """Put the delivered bundles into stock. Available stock is capped at the variant's maximum;
    what is above it is moved to surplus with its own ledger row. The factory's warehouse
    invoice is written with the receipt."""
    purchase_order = await _locked_purchase_order(session, purchase_order_id)
    if purchase_order.status == "received":
        return purchase_order
    if purchase_order.status == "cancelled":
        raise Conflict("A cancelled purchase order cannot be received", code="invalid_status")
    lines = (await purchase_order_lines(session, [purchase_order.id]))[purchase_order.id]
    stock = {
        row.variant_id: row
        for row in await session.scalars(
            select(Inventory)
            .where(Inventory.variant_id.in_([line.variant_id for line in lines]))
            .order_by(Inventory.variant_id)
            .with_for_update()
        )
    }
    ledger = []
    for line in lines:
        inventory = stock.get(line.variant_id)
        if inventory is None:
            raise Conflict(
                f"Variant {line.variant_id} has no inventory to receive into",
                code="inventory_not_found",
            )
        reference = f"purchase-order:{purchase_order.number}"
        ledger.append(
            _movement(line.variant_id, "receive", quantity_delta=line.quantity, reference=reference)
        )
        # Only received units go to surplus: stock already on hand stays sellable.
        available = inventory.available_quantity + line.quantity
        surplus = min(line.quantity, max(0, available - inventory.max_stock_level))
        inventory.quantity += line.quantity - surplus
        inventory.surplus_quantity += surplus
        if surplus:
            ledger.append(
                _movement(
                    line.variant_id,
                    "surplus",
                    quantity_delta=-surplus,
                    reference=reference,
                    reason=f"above max stock level {inventory.max_stock_level}",
                )
            )
    await _record(session, ledger)
    purchase_order.status = "received"
    purchase_order.received_at = datetime.now(UTC)
    await invoice_received(session, purchase_order, invoice_terms)
    # A fall to the threshold while this order was open raised nothing: look again now.
    await _request_reorder(session, purchase_order.product_id)
    for group in await session.scalars(
        select(Fulfilment.group_reference).where(
            Fulfilment.product_id == purchase_order.product_id,
            Fulfilment.status == "awaiting_stock",
        )
    ):
        await enqueue(session, outbox, COMPLETE_FULFILMENT, {"group": group})
    await session.commit()
    return purchase_order


def purchase_order_message(
    purchase_order: PurchaseOrder, lines: list[PurchaseOrderLine], product: ProductDetailOut
) -> str:
    """The factory's WhatsApp text: the PO, its bundles and each variant's units."""
    names = {variant.id: f"{variant.variant_name} ({variant.sku})" for variant in product.variants}
    units = "\n".join(
        f"- {names.get(line.variant_id, str(line.variant_id))}: {line.quantity} pcs "
        f"({line.units_in_bundle} per bundel)"
        for line in lines
    )
    return (
        f"Pesanan pembelian Laku {purchase_order.number}\n"
        f"Produk: {product.name} ({product.sku})\n"
        f"Jumlah: {purchase_order.bundles} bundel\n"
        f"{units}\n"
        f"Total: {format_rupiah(purchase_order.total_cost)} "
        f"(termasuk ongkir {format_rupiah(purchase_order.shipping_cost)})"
    )


async def factory_notification(
    session: AsyncSession,
    purchase_order_id: uuid.UUID,
    product: ProductDetailOut,
    factories: FactoryClient,
) -> NotificationRequest:
    purchase_order = await get_purchase_order(session, purchase_order_id)
    lines = (await purchase_order_lines(session, [purchase_order_id]))[purchase_order_id]
    factory = await factories.get_factory(purchase_order.factory_id)
    if factory is None:
        raise NotFound(f"Factory {purchase_order.factory_id} is unknown", code="factory_not_found")
    return NotificationRequest(
        channel="whatsapp",
        to=factory.phone,
        text=purchase_order_message(purchase_order, lines, product),
    )
