"""Purchase orders of whole bundles from the factory: raised automatically when a variant falls
to its reorder threshold, or for a group buy's shortage; shipped by the factory, received
into stock (surplus above each variant's maximum held aside, the factory's warehouse invoice
written), or cancelled."""

import uuid
from collections.abc import Iterable
from datetime import UTC, datetime

import structlog
from sqlalchemy import insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from laku.core.errors import Conflict, InvalidInput, NotFound
from laku.core.outbox import enqueue
from laku.core.rows import found
from laku.core.security import Principal
from laku.group_buying.client import BundleCompositionOut
from laku.product.client import ProductDetailOut
from laku.warehouse.access import visible_page
from laku.warehouse.inventory import lock_product_stock, movement, record, request_reorder
from laku.warehouse.invoices import InvoiceTerms, invoice_received
from laku.warehouse.models import (
    Fulfilment,
    Inventory,
    PurchaseOrder,
    PurchaseOrderLine,
    outbox,
    purchase_order_number,
)
from laku.warehouse.rules import (
    COMPLETE_FULFILMENT,
    NOTIFY_FACTORY,
    FulfilmentStatus,
    bundles_to_cover,
)

log = structlog.get_logger()


async def raise_reorder(
    session: AsyncSession,
    product: ProductDetailOut,
    composition: BundleCompositionOut,
    shipping_cost_per_bundle: int,
) -> PurchaseOrder | None:
    """One purchase order of whole bundles lifting every low variant of the product above its
    threshold, unless an automatic reorder is already open for it (then None)."""
    units_in_bundle = {item.variant_id: item.units_in_bundle for item in composition.items}
    stock = await lock_product_stock(session, product.id)
    shortages = {
        row.variant_id: row.reorder_threshold - row.available_quantity + 1
        for row in stock.values()
        if row.available_quantity <= row.reorder_threshold and row.variant_id in units_in_bundle
    }
    bundles = bundles_to_cover(shortages, units_in_bundle)
    purchase_order_id = (
        await place_purchase_order(
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


async def place_purchase_order(
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


def purchase_order_not_found() -> NotFound:
    return NotFound("No such purchase order", code="purchase_order_not_found")


async def get_purchase_order(
    session: AsyncSession, purchase_order_id: uuid.UUID, *, lock: bool = False
) -> PurchaseOrder:
    return found(
        await session.get(PurchaseOrder, purchase_order_id, with_for_update=lock),
        purchase_order_not_found(),
    )


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
    principal: Principal,
    *,
    product_id: uuid.UUID | None,
    status: str | None,
    limit: int,
    offset: int,
) -> tuple[list[PurchaseOrder], int]:
    """Newest first; a factory's own only."""
    return await visible_page(
        session,
        PurchaseOrder,
        principal,
        limit=limit,
        offset=offset,
        product_id=product_id,
        status=status,
    )


async def ship_purchase_order(
    session: AsyncSession, purchase_order_id: uuid.UUID, tracking_number: str
) -> PurchaseOrder:
    purchase_order = await get_purchase_order(session, purchase_order_id, lock=True)
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
    purchase_order = await get_purchase_order(session, purchase_order_id, lock=True)
    if purchase_order.status == "cancelled":
        return purchase_order
    if purchase_order.status == "received":
        raise Conflict("A received purchase order cannot be cancelled", code="invalid_status")
    purchase_order.status = "cancelled"
    purchase_order.cancelled_at = datetime.now(UTC)
    await request_reorder(session, purchase_order.product_id)
    await session.commit()
    return purchase_order


async def receive_purchase_order(
    session: AsyncSession, purchase_order_id: uuid.UUID, invoice_terms: InvoiceTerms
) -> PurchaseOrder:
    """Put the delivered bundles into stock. Available stock is capped at the variant's maximum;
    what is above it is moved to surplus with its own ledger row. The factory's warehouse
    invoice is written with the receipt."""
    purchase_order = await get_purchase_order(session, purchase_order_id, lock=True)
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
            movement(line.variant_id, "receive", quantity_delta=line.quantity, reference=reference)
        )
        # Only received units go to surplus: stock already on hand stays sellable.
        available = inventory.available_quantity + line.quantity
        surplus = min(line.quantity, max(0, available - inventory.max_stock_level))
        inventory.quantity += line.quantity - surplus
        inventory.surplus_quantity += surplus
        if surplus:
            ledger.append(
                movement(
                    line.variant_id,
                    "surplus",
                    quantity_delta=-surplus,
                    reference=reference,
                    reason=f"above max stock level {inventory.max_stock_level}",
                )
            )
    await record(session, ledger)
    purchase_order.status = "received"
    purchase_order.received_at = datetime.now(UTC)
    await invoice_received(session, purchase_order, invoice_terms)
    # A fall to the threshold while this order was open raised nothing: look again now.
    await request_reorder(session, purchase_order.product_id)
    for group in await session.scalars(
        select(Fulfilment.group_reference).where(
            Fulfilment.product_id == purchase_order.product_id,
            Fulfilment.status == FulfilmentStatus.AWAITING_STOCK,
        )
    ):
        await enqueue(session, outbox, COMPLETE_FULFILMENT, {"group": group})
    await session.commit()
    return purchase_order
