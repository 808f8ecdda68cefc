"""logistics' outbox kinds and what each deferred step does: telling order-service what the
courier did."""

import uuid
from collections.abc import Mapping
from typing import Any, NoReturn

from laku.core.http import ServiceCallError
from laku.core.outbox import FinalRefusal, Handler
from laku.order.client import OrderClient, OrderOut, OrderStatus

# The order's moves a shipment's statuses call for.
MARK_ORDER_SHIPPED = "mark_order_shipped"
MARK_ORDER_DELIVERED = "mark_order_delivered"


def handlers(orders: OrderClient) -> Mapping[str, Handler]:
    moves = OrderMoves(orders)
    return {MARK_ORDER_SHIPPED: moves.mark_shipped, MARK_ORDER_DELIVERED: moves.mark_delivered}


class OrderMoves:
    """Tells order-service what the courier did. Each move has one idempotency key per
    shipment, so however often it is retried (or both run at once) it is applied once."""

    def __init__(self, orders: OrderClient):
        self._orders = orders

    async def mark_shipped(self, _: int, payload: dict[str, Any]) -> None:
        try:
            await self._ship(payload)
        except ServiceCallError as exc:
            if not _invalid_transition(exc):
                raise
            order = await self._orders.get_order(uuid.UUID(payload["order_id"]))
            if order is None or order.status != OrderStatus.DELIVERED:  # delivered: done
                self._give_up(payload, order, "shipped")

    async def mark_delivered(self, _: int, payload: dict[str, Any]) -> None:
        order_id = uuid.UUID(payload["order_id"])
        try:
            order = await self._orders.get_order(order_id)
            if order is not None and order.status == OrderStatus.PROCESSING:
                order = await self._ship(payload)
            if order is not None and order.status == OrderStatus.SHIPPED:
                order = await self._orders.mark_delivered(
                    order_id, idempotency_key=f"shipment:{payload['shipment_id']}:delivered"
                )
        except ServiceCallError as exc:
            if not _invalid_transition(exc):
                raise
            order = await self._orders.get_order(order_id)
        if order is None or order.status != OrderStatus.DELIVERED:
            self._give_up(payload, order, "delivered")

    async def _ship(self, payload: dict[str, Any]) -> OrderOut:
        return await self._orders.mark_shipped(
            uuid.UUID(payload["order_id"]),
            tracking_number=payload["tracking_number"],
            courier=payload["courier"],
            idempotency_key=f"shipment:{payload['shipment_id']}:shipped",
        )

    @staticmethod
    def _give_up(payload: dict[str, Any], order: OrderOut | None, move: str) -> NoReturn:
        """The order cannot take the move (cancelled or refunded while the parcel travelled,
        or gone): retrying would not change that, so the row is dead-lettered for an admin."""
        state = f"is {order.status}" if order else "does not exist"
        raise FinalRefusal(
            f"order {payload['order_id']} {state}: cannot be marked {move} "
            f"(shipment {payload['shipment_id']})"
        )


def _invalid_transition(exc: ServiceCallError) -> bool:
    return exc.status == 409 and exc.code == "invalid_order_transition"
