"""Stock, reservations, the movement ledger, automatic reorders and purchase orders.

Every change to a variant's stock locks its inventory row, writes the change and its ledger
row(s) in one transaction, so on-hand and reserved stock always equal the ledger's sums.
"""

import asyncio
import math
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
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


class ReservationReleased(Conflict):
    code = "reservation_released"
    title = "This reservation was released"


def hold_until(requested: datetime | None, longest_hold: timedelta) -> datetime:
    """When a hold asked to last until `requested` lapses: never later than the longest."""
    latest = datetime.now(UTC) + longest_hold
    return latest if requested is None else min(requested, latest)


async def reserve_batch(
    session: AsyncSession,
    variant_id: uuid.UUID,
    requests: list[ReservationCreate],
    longest_hold: timedelta,
) -> list[ReservationResult]:
    """Reserve for many requests of one variant under one row lock, first come first served.

    A reference seen before (in the database or earlier in the batch) is answered with its
    reservation, whatever stock is left: reserving is idempotent by reference. A reference
    released before it was reserved (`void`, its caller gave up) is refused, and so is one
    voided while this batch was written: the unique reference decides which came first."""
    references = [request.reference for request in requests]
    known = {
        row.reference: row._asdict()
        for row in (
            await session.execute(
                select(
                    Reservation.reference,
                    Reservation.variant_id,
                    Reservation.quantity,
                    Reservation.status,
                    Reservation.expires_at,
                    Reservation.confirmed_at,
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
    accepted: dict[str, dict[str, Any]] = {}
    # Per request: the reference's row as answered, or the error refusing it.
    outcomes: list[dict[str, Any] | DomainError] = []
    for request in requests:
        prior = accepted.get(request.reference) or known.get(request.reference)
        if prior is not None:
            if prior["status"] == "void":
                outcomes.append(
                    ReservationReleased("This reference was released before it was reserved")
                )
            elif (prior["variant_id"], prior["quantity"]) != (request.variant_id, request.quantity):
                outcomes.append(
                    Conflict("Reference used for another reservation", code="reference_reused")
                )
            else:
                outcomes.append(prior)
        elif request.quantity > available:
            outcomes.append(
                InsufficientStock(f"Only {max(available, 0)} available, {request.quantity} asked")
            )
        else:
            available -= request.quantity
            accepted[request.reference] = {
                "id": uuid.uuid4(),
                "reference": request.reference,
                "variant_id": variant_id,
                "quantity": request.quantity,
                "group_reference": request.group,
                "status": "reserved",
                "expires_at": hold_until(request.expires_at, longest_hold),
                "confirmed_at": None,
            }
            outcomes.append(accepted[request.reference])

    inserted: set[str] = set()
    if accepted:
        inserted = set(
            await session.scalars(
                pg_insert(Reservation)
                .values(list(accepted.values()))
                .on_conflict_do_nothing(index_elements=[Reservation.reference])
                .returning(Reservation.reference)
            )
        )
        lost = [ref for ref in accepted if ref not in inserted]
        if lost:  # voided (or reserved elsewhere) since they were looked up: refused
            available += sum(accepted[ref]["quantity"] for ref in lost)
            log.warning("reservations_lost_to_concurrent_release", references=lost)
        written = [accepted[ref] for ref in accepted if ref in inserted]
        await _record(
            session,
            [
                _movement(
                    variant_id, "reserve", reserved_delta=r["quantity"], reference=r["reference"]
                )
                for r in written
            ],
        )
        if written:
            await session.execute(
                update(Inventory)
                .where(Inventory.variant_id == variant_id)
                .values(
                    reserved_quantity=Inventory.reserved_quantity
                    + sum(r["quantity"] for r in written),
                    updated_at=func.now(),
                )
            )
        if crossed_threshold(inventory.available_quantity, available, inventory.reorder_threshold):
            await _request_reorder(session, inventory.product_id)
    await session.commit()
    results: list[ReservationResult] = []
    answered: set[str] = set()
    for request, outcome in zip(requests, outcomes, strict=True):
        if isinstance(outcome, DomainError):
            results.append(outcome)
            continue
        created = outcome["reference"] in inserted and outcome["reference"] not in answered
        answered.add(outcome["reference"])
        if outcome["reference"] not in inserted and outcome["reference"] not in known:
            # Lost to a release of the reference just now.
            results.append(
                ReservationReleased("This reference was released before it was reserved")
            )
            continue
        row = outcome
        results.append(
            Reserved(
                ReservationOut(
                    reference=request.reference,
                    variant_id=request.variant_id,
                    quantity=request.quantity,
                    status=row["status"],
                    available_quantity=available,
                    expires_at=row["expires_at"] if row["status"] == "reserved" else None,
                    confirmed=row["confirmed_at"] is not None,
                ),
                created=created,
            )
        )
    return results


class ReservationDesk:
    """Coalesces concurrent reservations of one variant into one transaction.

    One hot variant is one hot row: a transaction per request queues every request on that
    row's lock. Here requests that arrive while a batch is being written wait for the next
    batch, so the lock is taken once per batch instead of once per request."""

    def __init__(
        self,
        db: Database,
        on_commit: Callable[[], None],
        longest_hold: timedelta,
        max_batch: int = 500,
    ):
        self._db = db
        self._on_commit = on_commit
        self._longest_hold = longest_hold
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
                            session,
                            variant_id,
                            [request for request, _ in batch],
                            self._longest_hold,
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


def _not_found() -> NotFound:
    return NotFound("No reservation with this reference", code="reservation_not_found")


async def _locked_reservation(
    session: AsyncSession, reference: str
) -> tuple[Reservation, Inventory | None]:
    """The reservation and its variant's stock, locked in the order every writer uses:
    the inventory row first, then reservations (a void reference has no stock)."""
    variant_id = await session.scalar(
        select(Reservation.variant_id).where(Reservation.reference == reference)
    )
    inventory = None if variant_id is None else await _locked_inventory(session, variant_id)
    reservation = await session.scalar(
        select(Reservation).where(Reservation.reference == reference).with_for_update()
    )
    if reservation is None:
        raise _not_found()
    return reservation, inventory


async def get_reservation(session: AsyncSession, reference: str) -> ReservationOut:
    reservation = await session.scalar(
        select(Reservation).where(Reservation.reference == reference)
    )
    if reservation is None:
        raise _not_found()
    inventory = (
        None
        if reservation.variant_id is None
        else await get_inventory(session, reservation.variant_id)
    )
    return _reservation_out(reservation, inventory)


def _reservation_out(reservation: Reservation, inventory: Inventory | None) -> ReservationOut:
    return ReservationOut(
        reference=reservation.reference,
        variant_id=reservation.variant_id,
        quantity=reservation.quantity,
        status=reservation.status,
        available_quantity=None if inventory is None else inventory.available_quantity,
        expires_at=reservation.expires_at if reservation.status == "reserved" else None,
        confirmed=reservation.confirmed_at is not None,
    )


async def _void(session: AsyncSession, reference: str) -> bool:
    """Leave a `void` row for a reference never reserved, so that a reserve arriving later
    (its answer lost, its undo first) is refused. False when a reservation got there first
    (the insert waits for one being written to commit)."""
    voided = await session.scalar(
        pg_insert(Reservation)
        .values(id=uuid.uuid4(), reference=reference, variant_id=None, quantity=0, status="void")
        .on_conflict_do_nothing(index_elements=[Reservation.reference])
        .returning(Reservation.id)
    )
    await session.commit()
    return voided is not None


async def release(session: AsyncSession, reference: str) -> ReservationOut:
    """Give reserved stock back (a join that failed, an unpaid invoice, a failed group). A
    reference never reserved is voided: reserving it later is refused."""
    try:
        reservation, inventory = await _locked_reservation(session, reference)
    except NotFound:
        await session.rollback()
        if not await _void(session, reference):
            return await release(session, reference)  # reserved a moment ago: release it
        reservation, inventory = await _locked_reservation(session, reference)
    if reservation.status == "deducted":
        raise Conflict("This reservation was already taken from stock", code="reservation_deducted")
    if reservation.status == "reserved":
        assert inventory is not None  # a reserved reservation has its variant
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


async def confirm(session: AsyncSession, reference: str) -> ReservationOut:
    """The hold's join was paid: it no longer lapses. Confirming again changes nothing; a
    hold that lapsed (released) or was never made is refused, so the payer is refunded."""
    reservation, inventory = await _locked_reservation(session, reference)
    if reservation.status in ("released", "void"):
        raise ReservationReleased("The hold lapsed or was released before it was confirmed")
    if reservation.status == "reserved" and reservation.confirmed_at is None:
        reservation.confirmed_at = datetime.now(UTC)
        reservation.expires_at = None
        await session.commit()
    return _reservation_out(reservation, inventory)


async def deduct(session: AsyncSession, reference: str) -> ReservationOut:
    """Take reserved stock out of the warehouse (it is being shipped to the buyer)."""
    reservation, inventory = await _locked_reservation(session, reference)
    if reservation.status in ("released", "void"):
        raise ReservationReleased("This reservation was released")
    assert inventory is not None  # reserved or deducted: it has its variant
    if reservation.status == "reserved" and inventory.quantity < reservation.quantity:
        raise Conflict("Stock on hand is short of this reservation", code="stock_short")
    if reservation.status == "reserved":
        reservation.status = "deducted"
        reservation.expires_at = None
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


# Lapsed holds ------------------------------------------------------------------------------


async def release_lapsed(session: AsyncSession, limit: int) -> int:
    """Release up to `limit` unconfirmed holds past their expiry in one transaction, each a
    ledger row; returns how many. Holds being changed by another writer are left for the
    next sweep."""
    due = (
        await session.execute(
            select(Reservation.id, Reservation.variant_id)
            .where(Reservation.status == "reserved", Reservation.expires_at < func.now())
            .order_by(Reservation.expires_at)
            .limit(limit)
        )
    ).all()
    if not due:
        return 0
    # Inventory rows first, in one order, as every writer takes them.
    await session.execute(
        select(Inventory.id)
        .where(Inventory.variant_id.in_(sorted({row.variant_id for row in due})))
        .order_by(Inventory.variant_id)
        .with_for_update()
    )
    rows = (
        await session.execute(
            update(Reservation)
            .where(
                Reservation.id.in_([row.id for row in due]),
                Reservation.status == "reserved",
                Reservation.expires_at < func.now(),
            )
            .values(status="released", expires_at=None, updated_at=func.now())
            .returning(Reservation.variant_id, Reservation.quantity, Reservation.reference)
        )
    ).all()
    for variant_id, units in _units_by_variant(rows).items():
        await session.execute(
            update(Inventory)
            .where(Inventory.variant_id == variant_id)
            .values(reserved_quantity=Inventory.reserved_quantity - units, updated_at=func.now())
        )
    await _record(
        session,
        [
            _movement(
                row.variant_id,
                "release",
                reserved_delta=-row.quantity,
                reference=row.reference,
                reason="hold lapsed",
            )
            for row in rows
        ],
    )
    await session.commit()
    if rows:
        log.info("lapsed_holds_released", reservations=len(rows))
    return len(rows)


async def run_hold_sweeper(db: Database, interval: timedelta, batch: int = 1_000) -> None:
    """Release lapsed holds every `interval`, in batches, for as long as the process runs.
    Several processes may sweep at once: each release is conditional on the hold."""
    while True:
        await asyncio.sleep(interval.total_seconds())
        try:
            while True:
                async with db.sessions() as session:
                    if await release_lapsed(session, batch) < batch:
                        break
        except Exception:
            log.exception("hold_sweep_failed")


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
    session: AsyncSession,
    group: str,
    status: str,
    references: list[str] | None = None,
    *,
    confirmed: bool | None = None,
) -> list[Any]:
    """Move the group's still-reserved reservations (all, or those named, or only those
    confirmed or not) to `status`."""
    chosen = [Reservation.group_reference == group, Reservation.status == "reserved"]
    if references is not None:
        chosen.append(Reservation.reference.in_(references))
    if confirmed is not None:
        paid = Reservation.confirmed_at.is_not(None)
        chosen.append(paid if confirmed else ~paid)
    return list(
        (
            await session.execute(
                update(Reservation)
                .where(*chosen)
                .values(status=status, expires_at=None, updated_at=func.now())
                .returning(Reservation.variant_id, Reservation.quantity, Reservation.reference)
            )
        ).all()
    )


def _units_by_variant(rows: Iterable[Any]) -> dict[uuid.UUID, int]:
    units: dict[uuid.UUID, int] = {}
    for row in rows:
        units[row.variant_id] = units.get(row.variant_id, 0) + row.quantity
    return units


async def _lock_group_stock(session: AsyncSession, group: str) -> dict[uuid.UUID, Inventory]:
    product_ids = await session.scalars(
        select(Inventory.product_id)
        .join(Reservation, Reservation.variant_id == Inventory.variant_id)
        .where(Reservation.group_reference == group)
        .distinct()
    )
    stock: dict[uuid.UUID, Inventory] = {}
    for product_id in sorted(product_ids):
        stock |= await _lock_product_stock(session, product_id)
    return stock


async def _release_taken(
    session: AsyncSession, stock: dict[uuid.UUID, Inventory], rows: list[Any], reason: str | None
) -> None:
    for variant_id, units in _units_by_variant(rows).items():
        stock[variant_id].reserved_quantity -= units
    await _record(
        session,
        [
            _movement(
                row.variant_id,
                "release",
                reserved_delta=-row.quantity,
                reference=row.reference,
                reason=reason,
            )
            for row in rows
        ],
    )


async def release_group(
    session: AsyncSession, group: str, references: list[str] | None = None
) -> tuple[int, int]:
    """Give back the reservations of a group buy in one transaction: all of them (it failed
    or was cancelled) or those named (its unpaid joins at close). Returns (reservations
    released, units); releasing again releases nothing."""
    stock = await _lock_group_stock(session, group)
    rows = await _take_group(session, group, "released", references)
    await _release_taken(session, stock, rows, None)
    await session.commit()
    return len(rows), sum(row.quantity for row in rows)


async def confirm_group(
    session: AsyncSession, group: str, references: list[str]
) -> tuple[int, int, list[str]]:
    """The close names a group's paid reservations (in chunks): they are confirmed, to be taken
    from stock by the fulfilment, which releases the others. A paid hold that lapsed before
    its confirmation arrived is reserved again: the buyer paid, so the stock is owed, and any
    shortage is ordered by the fulfilment. Returns (confirmed now, of which restored, unknown
    references); confirming again changes nothing."""
    stock = await _lock_group_stock(session, group)
    rows = (
        await session.execute(
            select(Reservation)
            .where(Reservation.group_reference == group, Reservation.reference.in_(references))
            .order_by(Reservation.reference)
            .with_for_update()
        )
    ).scalars()
    found: set[str] = set()
    confirmed = restored = 0
    at = datetime.now(UTC)
    ledger = []
    for reservation in rows:
        found.add(reservation.reference)
        if reservation.status == "released" and reservation.variant_id is not None:
            reservation.status = "reserved"
            stock[reservation.variant_id].reserved_quantity += reservation.quantity
            ledger.append(
                _movement(
                    reservation.variant_id,
                    "reserve",
                    reserved_delta=reservation.quantity,
                    reference=reservation.reference,
                    reason="paid after its hold lapsed",
                )
            )
            restored += 1
        if reservation.status == "reserved" and reservation.confirmed_at is None:
            reservation.confirmed_at = at
            reservation.expires_at = None
            confirmed += 1
    await _record(session, ledger)
    await session.commit()
    if restored:
        log.warning("lapsed_paid_holds_restored", group=group, reservations=restored)
    return confirmed, restored, [ref for ref in references if ref not in found]


async def fulfil_group(
    session: AsyncSession,
    group: str,
    product: ProductDetailOut,
    composition: BundleCompositionOut | None,
    shipping_cost_per_bundle: int,
) -> Fulfilment:
    """Take a closed group buy's confirmed (paid) reservations out of stock and release its
    others. Where stock is short (counted stock lost after it was promised), wait for
    bundles: those already on order, else a new purchase order covering every short variant.
    Safe to call again: a fulfilled group stays fulfilled, a waiting one completes once the
    stock is in."""
    stock = await _lock_product_stock(session, product.id)
    fulfilment = await session.get(Fulfilment, group)
    if fulfilment is not None and fulfilment.status == "fulfilled":
        await session.commit()
        return fulfilment
    # Only the confirmed (paid) reservations are taken; the group's others are given back.
    unpaid = await _take_group(session, group, "released", confirmed=False)
    await _release_taken(session, stock, unpaid, "not paid at the close")
    demand = _units_by_variant(
        (
            await session.execute(
                select(Reservation.variant_id, Reservation.quantity).where(
                    Reservation.group_reference == group,
                    Reservation.status == "reserved",
                    Reservation.confirmed_at.is_not(None),
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
    # From the columns just changed (the computed one is refreshed only after a flush).
    available = {v: stock[v].quantity - stock[v].reserved_quantity for v in demand}
    deficits = {v: -units for v, units in available.items() if units < 0}
    if not deficits:
        rows = await _take_group(session, group, "deducted", confirmed=True)
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
