"""Reservations: stock held for a buyer's join under the caller's reference, until it is
confirmed (paid), released, deducted or lapses. Concurrent reservations of one variant are
written in one transaction by the ReservationDesk; a sweeper releases lapsed holds."""

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import BigInteger, DateTime, Text, Uuid, func, literal, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from laku.core.db import Database, array_rows, insert_rows
from laku.core.errors import Conflict, DomainError, NotFound
from laku.core.problems import problem
from laku.core.rows import found
from laku.warehouse.inventory import (
    deduct_reserved,
    get_inventory,
    locked_inventory,
    movement,
    record,
    record_released,
    release_reserved,
    request_reorder,
)
from laku.warehouse.models import Inventory, Reservation
from laku.warehouse.rules import crossed_threshold, hold_until, units_by_variant
from laku.warehouse.schemas import ReservationCreate, ReservationOut

log = structlog.get_logger()

InsufficientStock = problem(Conflict, "insufficient_stock", "Not enough stock")
ReservationReleased = problem(Conflict, "reservation_released", "This reservation was released")


@dataclass(frozen=True)
class Reserved:
    reservation: ReservationOut
    created: bool  # False: the reference was reserved before


ReservationResult = Reserved | DomainError


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
        rows = list(accepted.values())
        new = array_rows(
            ("id", Uuid(), [row["id"] for row in rows]),
            ("reference", Text(), [row["reference"] for row in rows]),
            ("quantity", BigInteger(), [row["quantity"] for row in rows]),
            ("group_reference", Text(), [row["group_reference"] for row in rows]),
            ("expires_at", DateTime(timezone=True), [row["expires_at"] for row in rows]),
        )
        table = Reservation.__table__
        inserted = set(
            await session.scalars(
                insert_rows(
                    table, new, variant_id=literal(variant_id, Uuid()), status=literal("reserved")
                )
                .on_conflict_do_nothing(index_elements=[table.c.reference])
                .returning(table.c.reference)
            )
        )
        lost = [ref for ref in accepted if ref not in inserted]
        if lost:  # voided (or reserved elsewhere) since they were looked up: refused
            available += sum(accepted[ref]["quantity"] for ref in lost)
            log.warning("reservations_lost_to_concurrent_release", references=lost)
        written = [accepted[ref] for ref in accepted if ref in inserted]
        await record(
            session,
            [
                movement(
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
                .execution_options(synchronize_session=False)  # no Inventory object is held
            )
        if crossed_threshold(inventory.available_quantity, available, inventory.reorder_threshold):
            await request_reorder(session, inventory.product_id)
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
    inventory = None if variant_id is None else await locked_inventory(session, variant_id)
    reservation = found(
        await session.scalar(
            select(Reservation).where(Reservation.reference == reference).with_for_update()
        ),
        _not_found(),
    )
    return reservation, inventory


async def get_reservation(session: AsyncSession, reference: str) -> ReservationOut:
    reservation = found(
        await session.scalar(select(Reservation).where(Reservation.reference == reference)),
        _not_found(),
    )
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
        await release_reserved(session, {inventory.variant_id: inventory}, [reservation])
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
        await deduct_reserved(session, {inventory.variant_id: inventory}, [reservation])
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
    for variant_id, units in units_by_variant(rows).items():
        await session.execute(
            update(Inventory)
            .where(Inventory.variant_id == variant_id)
            .values(reserved_quantity=Inventory.reserved_quantity - units, updated_at=func.now())
        )
    await record_released(session, rows, "hold lapsed")
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
