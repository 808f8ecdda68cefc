"""A group buy's reservations ("session:<id>"), handled together: released when it fails or
is cancelled, its paid ones confirmed at its close, then fulfilled: taken out of stock, or,
where counted stock was lost after it was promised, waiting for bundles on order.

Once a session's goods are in hand, shipping its orders is queued with the fulfilment (tasks.py
tells order-service and books the parcels with logistics-service).
"""

import uuid
from datetime import UTC, datetime
from typing import Any

import structlog
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from laku.core.errors import Conflict, NotFound
from laku.core.outbox import enqueue
from laku.group_buying.client import BundleCompositionOut
from laku.product.client import ProductDetailOut
from laku.warehouse.inventory import (
    deduct_reserved,
    lock_product_stock,
    movement,
    record,
    release_reserved,
)
from laku.warehouse.models import Fulfilment, Inventory, PurchaseOrder, Reservation, outbox
from laku.warehouse.purchase_orders import place_purchase_order, purchase_order_lines
from laku.warehouse.rules import (
    OPEN_PURCHASE_ORDER_STATUSES,
    SHIP_GROUP,
    FulfilmentStatus,
    bundles_to_cover,
    session_of_group,
    units_by_variant,
)

log = structlog.get_logger()


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


async def _lock_group_stock(session: AsyncSession, group: str) -> dict[uuid.UUID, Inventory]:
    product_ids = await session.scalars(
        select(Inventory.product_id)
        .join(Reservation, Reservation.variant_id == Inventory.variant_id)
        .where(Reservation.group_reference == group)
        .distinct()
    )
    stock: dict[uuid.UUID, Inventory] = {}
    for product_id in sorted(product_ids):
        stock |= await lock_product_stock(session, product_id)
    return stock


async def release_group(
    session: AsyncSession, group: str, references: list[str] | None = None
) -> tuple[int, int]:
    """Give back the reservations of a group buy in one transaction: all of them (it failed
    or was cancelled) or those named (its unpaid joins at close). Returns (reservations
    released, units); releasing again releases nothing."""
    stock = await _lock_group_stock(session, group)
    rows = await _take_group(session, group, "released", references)
    await release_reserved(session, stock, rows)
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
                movement(
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
    await record(session, ledger)
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
    stock = await lock_product_stock(session, product.id)
    fulfilment = await session.get(Fulfilment, group)
    if fulfilment is not None and fulfilment.status == FulfilmentStatus.FULFILLED:
        await session.commit()
        return fulfilment
    # Only the confirmed (paid) reservations are taken; the group's others are given back.
    unpaid = await _take_group(session, group, "released", confirmed=False)
    await release_reserved(session, stock, unpaid, "not paid at the close")
    demand = units_by_variant(
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
            status=FulfilmentStatus.AWAITING_STOCK.value,
            units=sum(demand.values()),
        )
        session.add(fulfilment)
    # From the columns just changed (the computed one is refreshed only after a flush).
    available = {v: stock[v].quantity - stock[v].reserved_quantity for v in demand}
    deficits = {v: -units for v, units in available.items() if units < 0}
    if not deficits:
        rows = await _take_group(session, group, "deducted", confirmed=True)
        await deduct_reserved(session, stock, rows)
        fulfilment.status = FulfilmentStatus.FULFILLED.value
        fulfilment.fulfilled_at = datetime.now(UTC)
        if session_of_group(group) is not None:  # its orders can ship
            await enqueue(session, outbox, SHIP_GROUP, {"group": group})
        await session.commit()
        return fulfilment

    open_orders = list(
        await session.scalars(
            select(PurchaseOrder)
            .where(
                PurchaseOrder.product_id == product.id,
                PurchaseOrder.status.in_(OPEN_PURCHASE_ORDER_STATUSES),
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
        fulfilment.purchase_order_id = await place_purchase_order(
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
