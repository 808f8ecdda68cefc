import uuid
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import structlog
from fastapi import FastAPI

from laku.core.app import create_service_app, run_in_background
from laku.core.errors import NotFound
from laku.core.http import ServiceCallError
from laku.core.outbox import FinalRefusal, Handler
from laku.core.services import service_url
from laku.factory.client import FactoryClient
from laku.group_buying.client import GroupBuyingClient
from laku.logistics.client import LogisticsClient
from laku.notification.client import NotificationClient
from laku.order.client import OrderClient
from laku.product.client import ProductClient
from laku.settlement.client import SettlementClient
from laku.warehouse import dispatch, invoices, service
from laku.warehouse.metrics import BUSINESS_METRICS
from laku.warehouse.models import idempotency_keys, outbox
from laku.warehouse.routes import router

log = structlog.get_logger()

SESSION_GROUP_PREFIX = "session:"  # how group-buying names a session's reservations


async def _startup(app: FastAPI) -> None:
    state = app.state
    transport = (state.http, state.service_tokens)

    def url(name: str) -> str:
        return service_url(name, state.settings)

    state.products = ProductClient(url("product"), *transport)
    state.factories = FactoryClient(url("factory"), *transport)
    state.group_buying = GroupBuyingClient(url("group-buying"), *transport)
    state.notifications = NotificationClient(url("notification"), *transport)
    state.orders = OrderClient(url("order"), *transport)
    state.logistics = LogisticsClient(url("logistics"), *transport)
    state.settlements = SettlementClient(url("settlement"), *transport)
    state.reservation_desk = service.ReservationDesk(
        state.db,
        on_commit=lambda: state.outbox_relay.wake(),
        longest_hold=timedelta(seconds=state.settings.reservation_hold_seconds),
    )
    interval = state.settings.reservation_sweep_interval_seconds
    if interval > 0:
        run_in_background(
            app, service.run_hold_sweeper(state.db, timedelta(seconds=interval)), "hold-sweeper"
        )


def _outbox_handlers(app: FastAPI) -> Mapping[str, Handler]:
    """A refusal not handled here is the outbox's to judge: retried if it may pass, else
    dead-lettered with its reason."""
    state = app.state

    async def reorder(_: int, payload: dict[str, Any]) -> None:
        product_id = uuid.UUID(payload["productId"])
        product = await state.products.get_product(product_id)
        if product is None:
            log.info("reorder_of_unknown_product", product_id=str(product_id))
            return  # the product is gone: nothing to reorder
        composition = await state.group_buying.get_bundle_composition(product_id)
        if composition is None:
            # Raising keeps the reorder pending: it is raised once an admin sets the bundle.
            raise LookupError(f"product {product_id} has no bundle composition yet")
        async with state.db.sessions() as session:
            await service.raise_reorder(
                session,
                product,
                composition,
                state.settings.purchase_order_shipping_cost_per_bundle,
            )
        state.outbox_relay.wake()

    async def notify_factory(_: int, payload: dict[str, Any]) -> None:
        purchase_order_id = uuid.UUID(payload["purchaseOrderId"])
        async with state.db.sessions() as session:
            try:
                purchase_order = await service.get_purchase_order(session, purchase_order_id)
                product = await state.products.get_product(purchase_order.product_id)
                if product is None:
                    raise FinalRefusal(f"product {purchase_order.product_id} is unknown")
                message = await service.factory_notification(
                    session, purchase_order_id, product, state.factories
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
            waiting = await service.get_fulfilment(session, group)
            product = await state.products.get_product(waiting.product_id)
            if product is None:
                raise FinalRefusal(f"product {waiting.product_id} is unknown")
            composition = await state.group_buying.get_bundle_composition(product.id)
            fulfilment = await service.fulfil_group(
                session,
                group,
                product,
                composition,
                state.settings.purchase_order_shipping_cost_per_bundle,
            )
        state.outbox_relay.wake()
        if fulfilment.status == "fulfilled" and group.startswith(SESSION_GROUP_PREFIX):
            # The group-buying session waiting for this stock can now succeed.
            try:
                await state.group_buying.report_stock_received(
                    uuid.UUID(group.removeprefix(SESSION_GROUP_PREFIX)),
                    idempotency_key=f"stock-received:{group}",
                )
            except ServiceCallError as exc:
                if exc.code != "session_not_awaiting_stock":
                    raise
                # Still closing: group-buying looks at the fulfilment itself once it has.
                log.info("stock_received_before_pending_stock", group=group)

    async def ship_group(_: int, payload: dict[str, Any]) -> None:
        await dispatch.ship_group(state.orders, state.logistics, payload)

    async def post_invoice_payment(_: int, payload: dict[str, Any]) -> None:
        await invoices.post_payment(state.db, state.settlements, payload)

    return {
        dispatch.SHIP_GROUP: ship_group,
        invoices.POST_INVOICE_PAYMENT: post_invoice_payment,
        service.REORDER: reorder,
        service.NOTIFY_FACTORY: notify_factory,
        service.COMPLETE_FULFILMENT: complete_fulfilment,
    }


def create_app() -> FastAPI:
    return create_service_app(
        "warehouse",
        routers=[router],
        idempotency_keys=idempotency_keys,
        startup=_startup,
        outbox=(outbox, _outbox_handlers),
        idempotent_by_body=frozenset({"/api/reservations"}),
        metrics=BUSINESS_METRICS,
    )
