"""A group buy's reservations ("session:<id>"), handled together: released when it fails or
is cancelled, its paid ones confirmed at its close, then fulfilled: taken out of stock, or,
where counted stock was lost after it was promised, waiting for bundles on order.

Once a session's goods are in hand, shipping its orders is queued with the fulfilment (tasks.py
tells order-service and books the parcels with logistics-service).
"""

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import structlog
from sqlalchemy import (
    BigInteger,
    ColumnElement,
    String,
    any_,
    bindparam,
    func,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

from laku.core.errors import Conflict, NotFound
from laku.core.outbox import enqueue
from laku.core.rows import found
from laku.group_buying.client import BundleCompositionOut
from laku.product.client import ProductDetailOut
from laku.warehouse.inventory import lock_product_stock, movement, record
from laku.warehouse.models import (
    Fulfilment,
    Inventory,
    PurchaseOrder,
    Reservation,
    StockMovement,
    outbox,
)
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


# What taking a reservation to a status writes in the ledger: its kind, and whether on-hand
# stock falls with the reserved stock (the goods left) or only the reserved stock (given back).
_LEDGER = {"released": ("release", False), "deducted": ("deduct", True)}


def _among(column: Any, values: list[str]) -> ColumnElement[bool]:
    """`column = ANY(:values)`: one array parameter however many values there are."""
    return column == any_(bindparam(None, values, type_=ARRAY(String())))


async def _take_group(
    session: AsyncSession,
    group: str,
    status: str,
    stock: Mapping[uuid.UUID, Inventory],
    references: list[str] | None = None,
    *,
    confirmed: bool | None = None,
    reason: str | None = None,
) -> tuple[int, int]:
    """Move the group's still-reserved reservations (all, or those named, or only those
    confirmed or not) to `status` (released or deducted), each with its row in the ledger,
    in one statement however many there are, and take their units off the variants' `stock`
    (which the caller has locked). Returns (reservations, units) moved."""
    kind, leaves_warehouse = _LEDGER[status]
    chosen = [Reservation.group_reference == group, Reservation.status == "reserved"]
    if references is not None:
        chosen.append(_among(Reservation.reference, references))
    if confirmed is not None:
        paid = Reservation.confirmed_at.is_not(None)
        chosen.append(paid if confirmed else ~paid)
    taken = (
        update(Reservation)
        .where(*chosen)
        .values(status=status, expires_at=None, updated_at=func.now())
        .returning(Reservation.variant_id, Reservation.quantity, Reservation.reference)
        .cte("taken")
    )
    # A data-modifying WITH runs once, to completion, whether or not the query reads it.
    ledger = insert(StockMovement).from_select(
        ["variant_id", "kind", "quantity_delta", "reserved_delta", "reference", "reason"],
        select(
            taken.c.variant_id,
            literal(kind, String()),
            -taken.c.quantity if leaves_warehouse else literal(0, BigInteger()),
            -taken.c.quantity,
            taken.c.reference,
            literal(reason, String()),
        ),
    )
    rows = (
        await session.execute(
            select(
                taken.c.variant_id,
                func.count().cast(BigInteger),
                func.sum(taken.c.quantity).cast(BigInteger),
            )
            .add_cte(ledger.cte("ledger"))
            .group_by(taken.c.variant_id)
        )
    ).all()
    for variant_id, _, units in rows:
        stock[variant_id].reserved_quantity -= units
        if leaves_warehouse:
            stock[variant_id].quantity -= units
    return sum(row[1] for row in rows), sum(row[2] for row in rows)


async def _lock_group_stock(
    session: AsyncSession, group: str, references: list[str] | None = None
) -> dict[uuid.UUID, Inventory]:
    """The stock of every product the group's reservations (all, or those named) are of,
    locked. Named, they are found by their references, not by reading the whole group."""
    chosen = [Reservation.group_reference == group]
    if references is not None:
        chosen.append(_among(Reservation.reference, references))
    product_ids = await session.scalars(
        select(Inventory.product_id)
        .join(Reservation, Reservation.variant_id == Inventory.variant_id)
        .where(*chosen)
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
    stock = await _lock_group_stock(session, group, references)
    released = await _take_group(session, group, "released", stock, references)
    await session.commit()
    return released


async def confirm_group(
    session: AsyncSession, group: str, references: list[str]
) -> tuple[int, int, list[str]]:
    """The close names a group's paid reservations (in chunks): they are confirmed, to be taken
    from stock by the fulfilment, which releases the others. A paid hold that lapsed before
    its confirmation arrived is reserved again: the buyer paid, so the stock is owed, and any
    shortage is ordered by the fulfilment. Returns (confirmed now, of which restored, unknown
    references); confirming again changes nothing. A few statements however many are named."""
    stock = await _lock_group_stock(session, group, references)
    named = [Reservation.group_reference == group, _among(Reservation.reference, references)]
    restored = (
        await session.execute(
            update(Reservation)
            .where(*named, Reservation.status == "released", Reservation.variant_id.is_not(None))
            .values(status="reserved", updated_at=func.now())
            .returning(Reservation.variant_id, Reservation.quantity, Reservation.reference)
        )
    ).all()
    for variant_id, units in units_by_variant(restored).items():
        stock[variant_id].reserved_quantity += units
    await record(
        session,
        [
            movement(
                row.variant_id,
                "reserve",
                reserved_delta=row.quantity,
                reference=row.reference,
                reason="paid after its hold lapsed",
            )
            for row in restored
        ],
    )
    confirmed = await session.scalar(
        select(func.count()).select_from(
            update(Reservation)
            .where(*named, Reservation.status == "reserved", Reservation.confirmed_at.is_(None))
            .values(confirmed_at=func.now(), expires_at=None, updated_at=func.now())
            .returning(Reservation.id)
            .cte("confirmed")
        )
    )
    found = set(await session.scalars(select(Reservation.reference).where(*named)))
    await session.commit()
    if restored:
        log.warning("lapsed_paid_holds_restored", group=group, reservations=len(restored))
    return confirmed or 0, len(restored), [ref for ref in references if ref not in found]


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
    await _take_group(
        session, group, "released", stock, confirmed=False, reason="not paid at the close"
    )
    demand = dict(
        (
            await session.execute(
                select(Reservation.variant_id, func.sum(Reservation.quantity).cast(BigInteger))
                .where(
                    Reservation.group_reference == group,
                    Reservation.status == "reserved",
                    Reservation.confirmed_at.is_not(None),
                )
                .group_by(Reservation.variant_id)
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
        await _take_group(session, group, "deducted", stock, confirmed=True)
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
    return found(
        await session.get(Fulfilment, group),
        NotFound("This group has not been fulfilled", code="fulfilment_not_found"),
    )
