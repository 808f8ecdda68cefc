"""The warehouse's deferred work: what each outbox kind does once the relay delivers it.

Each is written to the outbox in the transaction of the change that causes it, so an outage of
the service or provider it reaches delays it and never loses it. A handler returns when the
work is done, raises RetryLater while what it needs is not there yet, and FinalRefusal when
what it names is gone; a refusal from another service is the outbox's to judge (retried if it
may pass, else dead-lettered with its reason). Every call carries one idempotency key per
piece of work, so a repeated delivery does it once.
"""

import uuid
from collections.abc import Mapping
from typing import Any

import structlog
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession

from laku.core.errors import NotFound
from laku.core.http import refused_with
from laku.core.money import format_rupiah
from laku.core.outbox import FinalRefusal, Handler, RetryLater
from laku.factory.client import FactoryClient
from laku.notification.client import NotificationRequest
from laku.product.client import ProductDetailOut
from laku.settlement.client import WarehouseInvoicePaid
from laku.warehouse import fulfilment, purchase_orders
from laku.warehouse.models import PurchaseOrder, PurchaseOrderLine, WarehouseInvoice
from laku.warehouse.rules import (
    COMPLETE_FULFILMENT,
    NOTIFY_FACTORY,
    POST_INVOICE_PAYMENT,
    REORDER,
    SHIP_GROUP,
    FulfilmentStatus,
    session_of_group,
)

log = structlog.get_logger()


def outbox_handlers(app: FastAPI) -> Mapping[str, Handler]:
    state = app.state

    async def reorder(_: int, payload: dict[str, Any]) -> None:
        """A variant fell to its threshold: one purchase order of whole bundles, unless one
        is open already."""
        product_id = uuid.UUID(payload["productId"])
        product = await state.products.get_product(product_id)
        if product is None:
            log.info("reorder_of_unknown_product", product_id=str(product_id))
            return  # the product is gone: nothing to reorder
        composition = await state.group_buying.get_bundle_composition(product_id)
        if composition is None:  # raised once an admin sets the bundle
            raise RetryLater(f"product {product_id} has no bundle composition yet")
        async with state.db.sessions() as session:
            await purchase_orders.raise_reorder(
                session,
                product,
                composition,
                state.settings.purchase_order_shipping_cost_per_bundle,
            )
        state.outbox_relay.wake()

    async def notify_factory(_: int, payload: dict[str, Any]) -> None:
        """The factory's WhatsApp of a new purchase order."""
        purchase_order_id = uuid.UUID(payload["purchaseOrderId"])
        async with state.db.sessions() as session:
            try:
                purchase_order = await purchase_orders.get_purchase_order(
                    session, purchase_order_id
                )
                product = await state.products.get_product(purchase_order.product_id)
                if product is None:
                    raise FinalRefusal(f"product {purchase_order.product_id} is unknown")
                message = await _factory_notification(
                    session, purchase_order, product, state.factories
                )
            except NotFound as exc:  # the purchase order or its factory
                raise FinalRefusal(f"{exc.code}: {exc}") from exc
        await state.notifications.send(
            message, idempotency_key=f"purchase-order-whatsapp:{purchase_order_id}"
        )

    async def complete_fulfilment(_: int, payload: dict[str, Any]) -> None:
        """Stock came in for a group buy that was waiting for it."""
        group = payload["group"]
        async with state.db.sessions() as session:
            waiting = await fulfilment.get_fulfilment(session, group)
            product = await state.products.get_product(waiting.product_id)
            if product is None:
                raise FinalRefusal(f"product {waiting.product_id} is unknown")
            composition = await state.group_buying.get_bundle_composition(product.id)
            fulfilled = await fulfilment.fulfil_group(
                session,
                group,
                product,
                composition,
                state.settings.purchase_order_shipping_cost_per_bundle,
            )
        state.outbox_relay.wake()
        session_id = session_of_group(group)
        if fulfilled.status == FulfilmentStatus.FULFILLED and session_id is not None:
            # The group-buying session waiting for this stock can now succeed.
            reporting = state.group_buying.report_stock_received(
                session_id, idempotency_key=f"stock-received:{group}"
            )
            if await refused_with(reporting, "session_not_awaiting_stock"):
                # Still closing: group-buying looks at the fulfilment itself once it has.
                log.info("stock_received_before_pending_stock", group=group)

    async def ship_group(_: int, payload: dict[str, Any]) -> None:
        """Goods in hand, orders out (seed step 8 -> 9): order-service first (the orders
        ready, their buyers told), then logistics-service books the group buy's parcels."""
        group = payload["group"]
        session_id = session_of_group(group)
        assert session_id is not None  # queued only for a session's group
        await state.orders.mark_session_ready(session_id, idempotency_key=f"goods-in-hand:{group}")
        await state.logistics.book_session(session_id, idempotency_key=f"ship-group:{group}")

    async def post_invoice_payment(_: int, payload: dict[str, Any]) -> None:
        """A warehouse invoice paid: its entry in settlement-service's ledger (settlement
        answers a second report with the same entry)."""
        async with state.db.sessions() as session:
            invoice = await session.get(WarehouseInvoice, uuid.UUID(payload["invoiceId"]))
        if invoice is None or invoice.payment_reference is None:
            return
        await state.settlements.record_warehouse_invoice_paid(
            WarehouseInvoicePaid(
                invoice_id=invoice.id,
                invoice_number=invoice.number,
                factory_id=invoice.factory_id,
                goods_amount=invoice.goods_amount + invoice.shipping_amount,
                tax_amount=invoice.tax_amount,
                total_amount=invoice.total_amount,
                payment_reference=invoice.payment_reference,
            ),
            idempotency_key=f"warehouse-invoice-paid:{invoice.id}",
        )

    return {
        REORDER: reorder,
        NOTIFY_FACTORY: notify_factory,
        COMPLETE_FULFILMENT: complete_fulfilment,
        SHIP_GROUP: ship_group,
        POST_INVOICE_PAYMENT: post_invoice_payment,
    }


async def _factory_notification(
    session: AsyncSession,
    purchase_order: PurchaseOrder,
    product: ProductDetailOut,
    factories: FactoryClient,
) -> NotificationRequest:
    lines = (await purchase_orders.purchase_order_lines(session, [purchase_order.id]))[
        purchase_order.id
    ]
    factory = await factories.get_factory(purchase_order.factory_id)
    if factory is None:
        raise NotFound(f"Factory {purchase_order.factory_id} is unknown", code="factory_not_found")
    return NotificationRequest(
        channel="whatsapp",
        to=factory.phone,
        text=purchase_order_message(purchase_order, lines, product),
    )


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
