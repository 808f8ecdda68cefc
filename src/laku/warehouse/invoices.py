"""Warehouse invoices (the seed's `warehouse_invoices`): what the warehouse owes the factory for
each received purchase order.

An invoice is written in the transaction that receives its purchase order: the goods at the
order's unit cost, its inbound shipping, PPN on both (`LAKU_WAREHOUSE_INVOICE_PPN_BPS`, 11%,
half up), due `LAKU_WAREHOUSE_INVOICE_DUE_DAYS` after receipt. An admin records its payment
with the transfer's reference; the ledger entry follows through the outbox to
settlement-service, keyed by the invoice, so it is posted once.
"""

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from laku.core.errors import Conflict, NotFound
from laku.core.money import apply_rate
from laku.core.outbox import enqueue
from laku.core.rows import found
from laku.core.security import Principal
from laku.warehouse.access import sees_factory, visible_page
from laku.warehouse.models import (
    Fulfilment,
    PurchaseOrder,
    PurchaseOrderLine,
    WarehouseInvoice,
    outbox,
    warehouse_invoice_number,
)
from laku.warehouse.rules import (
    POST_INVOICE_PAYMENT,
    SESSION_GROUP_PREFIX,
    WarehouseInvoiceStatus,
    session_of_group,
)


@dataclass(frozen=True)
class InvoiceTerms:
    ppn_bps: int
    due_days: int


def _not_found() -> NotFound:
    return NotFound("No such warehouse invoice", code="warehouse_invoice_not_found")


async def invoice_received(
    session: AsyncSession, purchase_order: PurchaseOrder, terms: InvoiceTerms
) -> None:
    """In the receiving transaction: the purchase order's invoice, unless it has one."""
    units = await session.scalar(
        select(func.coalesce(func.sum(PurchaseOrderLine.quantity), 0)).where(
            PurchaseOrderLine.purchase_order_id == purchase_order.id
        )
    )
    group = await session.scalar(
        select(Fulfilment.group_reference)
        .where(
            Fulfilment.purchase_order_id == purchase_order.id,
            Fulfilment.group_reference.startswith(SESSION_GROUP_PREFIX),
        )
        .order_by(Fulfilment.created_at)
        .limit(1)
    )
    goods = int(units or 0) * purchase_order.unit_cost
    shipping = purchase_order.shipping_cost
    tax = apply_rate(goods + shipping, terms.ppn_bps)
    number = await session.scalar(warehouse_invoice_number.next_value())
    received = purchase_order.received_at or datetime.now(UTC)
    await session.execute(
        pg_insert(WarehouseInvoice)
        .values(
            id=uuid.uuid4(),
            number=f"INV-WH-{received:%Y%m%d}-{number:05d}",
            purchase_order_id=purchase_order.id,
            group_session_id=session_of_group(group) if group else None,
            factory_id=purchase_order.factory_id,
            units=int(units or 0),
            unit_cost=purchase_order.unit_cost,
            goods_amount=goods,
            shipping_amount=shipping,
            tax_rate_bps=terms.ppn_bps,
            tax_amount=tax,
            total_amount=goods + shipping + tax,
            due_date=(received + timedelta(days=terms.due_days)).date(),
            status=WarehouseInvoiceStatus.PENDING.value,
        )
        .on_conflict_do_nothing(index_elements=[WarehouseInvoice.purchase_order_id])
    )


async def get_invoice(
    session: AsyncSession, invoice_id: uuid.UUID, principal: Principal
) -> WarehouseInvoice:
    invoice = await session.get(WarehouseInvoice, invoice_id)
    if invoice is None or not sees_factory(principal, invoice.factory_id):
        raise _not_found()
    return invoice


async def list_invoices(
    session: AsyncSession,
    principal: Principal,
    *,
    status: WarehouseInvoiceStatus | None,
    purchase_order_id: uuid.UUID | None,
    limit: int,
    offset: int,
) -> tuple[list[WarehouseInvoice], int]:
    """Newest first; a factory's own only."""
    return await visible_page(
        session,
        WarehouseInvoice,
        principal,
        limit=limit,
        offset=offset,
        status=status,
        purchase_order_id=purchase_order_id,
    )


async def pay(
    session: AsyncSession, invoice_id: uuid.UUID, payment_reference: str
) -> WarehouseInvoice:
    """pending -> paid with the transfer's reference, and its ledger entry queued. Paying it
    again with the same reference answers it as it is; another reference is refused (409
    `invoice_already_paid`)."""
    invoice = found(
        await session.get(WarehouseInvoice, invoice_id, with_for_update=True), _not_found()
    )
    if invoice.status == WarehouseInvoiceStatus.PAID:
        if invoice.payment_reference != payment_reference:
            raise Conflict(
                f"Invoice {invoice.number} was paid with reference {invoice.payment_reference}",
                code="invoice_already_paid",
            )
        await session.commit()
        return invoice
    invoice.status = WarehouseInvoiceStatus.PAID.value
    invoice.payment_reference = payment_reference
    invoice.paid_at = datetime.now(UTC)
    await enqueue(session, outbox, POST_INVOICE_PAYMENT, {"invoiceId": str(invoice.id)})
    await session.commit()
    await session.refresh(invoice)
    return invoice
