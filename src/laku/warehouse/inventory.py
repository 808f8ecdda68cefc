"""Stock of each variant and its movement ledger: creating inventory, counted corrections,
and the ledger check. Every change to a variant's stock locks its inventory row, writes the
change and its ledger row(s) in one transaction, so on-hand and reserved stock always equal
the ledger's sums; the other workflows write stock through the helpers here."""

import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from laku.core.errors import Conflict, InvalidInput, NotFound
from laku.core.outbox import enqueue
from laku.core.rows import found
from laku.product.client import ProductDetailOut
from laku.warehouse.models import Inventory, StockMovement, outbox
from laku.warehouse.rules import REORDER, crossed_threshold, units_by_variant
from laku.warehouse.schemas import AdjustmentCreate, InventoryCreate, LedgerCheckOut


def movement(
    variant_id: uuid.UUID,
    kind: str,
    *,
    quantity_delta: int = 0,
    reserved_delta: int = 0,
    reference: str | None = None,
    reason: str | None = None,
) -> dict[str, Any]:
    """One row of the stock ledger, to `record`."""
    return {
        "variant_id": variant_id,
        "kind": kind,
        "quantity_delta": quantity_delta,
        "reserved_delta": reserved_delta,
        "reference": reference,
        "reason": reason,
    }


async def record(session: AsyncSession, movements: list[dict[str, Any]]) -> None:
    if movements:
        await session.execute(insert(StockMovement.__table__), movements)


async def record_released(
    session: AsyncSession, reservations: Iterable[Any], reason: str | None = None
) -> None:
    """The ledger rows of reservations given back: their units leave reserved stock."""
    await record(
        session,
        [
            movement(
                r.variant_id,
                "release",
                reserved_delta=-r.quantity,
                reference=r.reference,
                reason=reason,
            )
            for r in reservations
        ],
    )


async def release_reserved(
    session: AsyncSession,
    stock: Mapping[uuid.UUID, Inventory],
    reservations: Sequence[Any],
    reason: str | None = None,
) -> None:
    """Reservations given back: their units leave the reserved stock of their variants (the
    caller has locked `stock`), a ledger row each."""
    for variant_id, units in units_by_variant(reservations).items():
        stock[variant_id].reserved_quantity -= units
    await record_released(session, reservations, reason)


async def deduct_reserved(
    session: AsyncSession, stock: Mapping[uuid.UUID, Inventory], reservations: Sequence[Any]
) -> None:
    """Reservations taken out of the warehouse: on-hand and reserved stock of their variants
    both fall (the caller has locked `stock`), a ledger row each."""
    for variant_id, units in units_by_variant(reservations).items():
        stock[variant_id].quantity -= units
        stock[variant_id].reserved_quantity -= units
    await record(
        session,
        [
            movement(
                r.variant_id,
                "deduct",
                quantity_delta=-r.quantity,
                reserved_delta=-r.quantity,
                reference=r.reference,
            )
            for r in reservations
        ],
    )


async def request_reorder(session: AsyncSession, product_id: uuid.UUID) -> None:
    """Queue a look at the product's stock: a purchase order if a variant is low."""
    await enqueue(session, outbox, REORDER, {"productId": str(product_id)})


def _not_found() -> NotFound:
    return NotFound("No inventory for this variant", code="inventory_not_found")


async def locked_inventory(session: AsyncSession, variant_id: uuid.UUID) -> Inventory:
    return found(
        await session.scalar(
            select(Inventory).where(Inventory.variant_id == variant_id).with_for_update()
        ),
        _not_found(),
    )


async def lock_product_stock(
    session: AsyncSession, product_id: uuid.UUID
) -> dict[uuid.UUID, Inventory]:
    """Every variant's stock of the product, locked in the order every writer takes them."""
    rows = await session.scalars(
        select(Inventory)
        .where(Inventory.product_id == product_id)
        .order_by(Inventory.variant_id)
        .with_for_update()
    )
    return {row.variant_id: row for row in rows}


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
    await record(
        session,
        [
            movement(
                item.variant_id, "initial", quantity_delta=item.quantity, reason="initial stock"
            )
            for item in items
            if item.quantity
        ],
    )
    for product_id in {
        item.product_id for item in items if item.quantity <= item.reorder_threshold
    }:
        await request_reorder(session, product_id)
    await session.commit()
    for row in rows:
        await session.refresh(row)
    return rows


async def get_inventory(session: AsyncSession, variant_id: uuid.UUID) -> Inventory:
    return found(
        await session.scalar(select(Inventory).where(Inventory.variant_id == variant_id)),
        _not_found(),
    )


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
    inventory = await locked_inventory(session, variant_id)
    before = inventory.available_quantity
    # Stock counted lost is lost even when promised: available then falls below zero, and the
    # shortage is bought in bundles when the group buy closes.
    if inventory.quantity + adjustment.delta < 0:
        raise Conflict("On-hand stock cannot fall below zero", code="adjustment_below_zero")
    inventory.quantity += adjustment.delta
    await record(
        session,
        [movement(variant_id, "adjust", quantity_delta=adjustment.delta, reason=adjustment.reason)],
    )
    if crossed_threshold(before, before + adjustment.delta, inventory.reorder_threshold):
        await request_reorder(session, inventory.product_id)
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


async def ledger_check(
    session: AsyncSession, product_id: uuid.UUID | None = None
) -> list[LedgerCheckOut]:
    """Every variant's stock (of the product, if given) against the sums of its ledger."""
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
    checks = []
    for row in (await session.execute(query.order_by(Inventory.variant_id))).all():
        stock = row.Inventory
        ledger = (row.quantity or 0, row.reserved or 0, row.surplus or 0)
        checks.append(
            LedgerCheckOut(
                variant_id=stock.variant_id,
                quantity=stock.quantity,
                ledger_quantity=ledger[0],
                reserved_quantity=stock.reserved_quantity,
                ledger_reserved=ledger[1],
                surplus_quantity=stock.surplus_quantity,
                ledger_surplus=ledger[2],
                consistent=(stock.quantity, stock.reserved_quantity, stock.surplus_quantity)
                == ledger,
            )
        )
    return checks
