"""The order's deferred work: what each outbox kind does once the relay delivers it. Each is
written with the change that causes it (a cancellation, a move its buyer is told of), so a
payment-service or notification-service outage delays it and never loses it. Whatever the
callee answers is the outbox's to judge: an outage or work in progress is tried again, a
final refusal dead-letters the row for an admin."""

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI
from sqlalchemy import select, update

from laku.core.db import Database
from laku.core.outbox import Batched, Handler, Row
from laku.notification.client import NotificationClient, UserNotification
from laku.order.models import Order
from laku.order.rules import BuyerEvent, OrderStatus
from laku.payment.client import PaymentClient, RefundItem, RefundReason

# A cancelled order's subtotal goes back to its buyer's wallet through payment-service.
REFUND_CANCELLED_ORDER = "refund_cancelled_order"
# The buyer is told when the order is ready to ship, ships and is delivered.
TELL_BUYER = "tell_buyer"


def outbox_handlers(app: FastAPI) -> Mapping[str, Handler | Batched]:
    state = app.state

    async def refund_cancelled_order(_: int, payload: dict[str, Any]) -> None:
        await refund_cancelled(state.db, state.payments, uuid.UUID(payload["orderId"]))

    async def tell_buyers_of_orders(rows: Sequence[Row]) -> None:
        await tell_buyers(state.db, state.notifications, rows)

    return {
        REFUND_CANCELLED_ORDER: refund_cancelled_order,
        TELL_BUYER: Batched(tell_buyers_of_orders),
    }


async def refund_cancelled(db: Database, payments: PaymentClient, order_id: uuid.UUID) -> None:
    """The outbox's delivery of a cancellation: the subtotal refunded from the order's payment
    (once per order, by its reference), then the order `refunded`. A payment not refundable is
    payment-service's final refusal: the row is dead-lettered for an admin."""
    async with db.sessions() as session:
        order = await session.get(Order, order_id)
    if order is None or order.status != OrderStatus.CANCELLED:
        return
    if order.subtotal > 0:
        refund = RefundItem(
            payment_id=order.payment_id,
            amount=order.subtotal,
            reason=RefundReason.ORDER_CANCELLED,
            reference=f"order:{order.id}:cancelled",
        )
        await payments.refund([refund], idempotency_key=f"order-refund:{order.id}")
    async with db.sessions.begin() as session:
        await session.execute(
            update(Order)
            .where(Order.id == order_id, Order.status == OrderStatus.CANCELLED.value)
            .values(status=OrderStatus.REFUNDED.value)
        )


def buyer_notice(order: Order, event: BuyerEvent) -> UserNotification:
    """What the buyer is told of their order, once per order and event."""
    [item] = order.items
    what = f"{order.order_number} ({item.name} x {item.quantity})"
    if event is BuyerEvent.READY_TO_SHIP:
        subject = f"Order {order.order_number} is ready to ship"
        text = f"The goods of your order {what} are in our warehouse; the courier is being booked."
    elif event is BuyerEvent.SHIPPED:
        subject = f"Order {order.order_number} has shipped"
        text = (
            f"Your order {what} is on its way with {(order.courier or '').upper()}, "
            f"tracking number {order.tracking_number}."
        )
    else:
        subject = f"Order {order.order_number} has been delivered"
        text = f"Your order {what} has been delivered. Terima kasih for buying with Laku!"
    return UserNotification(
        user_id=order.user_id, key=f"order-{event.value}:{order.id}", subject=subject, text=text
    )


async def tell_buyers(db: Database, notifications: NotificationClient, rows: Sequence[Row]) -> None:
    """The outbox's delivery of the orders' notices, every leased one in one call (each keyed,
    so told once however often it is delivered)."""
    events = [(uuid.UUID(payload["orderId"]), BuyerEvent(payload["event"])) for _, payload in rows]
    async with db.sessions() as session:
        found = await session.scalars(
            select(Order).where(Order.id.in_({order_id for order_id, _ in events}))
        )
        orders = {order.id: order for order in found}
    # One order may have shipped and been delivered within one batch: both are told.
    notices = [
        buyer_notice(orders[order_id], event) for order_id, event in events if order_id in orders
    ]
    if notices:
        await notifications.notify_users(
            notices, idempotency_key=f"outbox:{rows[0][0]}-{rows[-1][0]}"
        )
