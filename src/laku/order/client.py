"""Typed client other services use to call order-service (group-buying: create a successful
group buy's orders when it closes; warehouse: mark a group buy's orders ready to ship;
logistics: read a group buy's orders, mark orders shipped and delivered)."""

import uuid

from laku.core.http import ServiceClient
from laku.order.rules import OrderStatus
from laku.order.schemas import (
    BulkOrdersCreate,
    BulkOrdersOut,
    CourierChoice,
    OrderItemOut,
    OrderOut,
    OrderShip,
    ProductSnapshot,
    SessionReadyOut,
)

__all__ = [
    "BulkOrdersOut",
    "CourierChoice",
    "OrderClient",
    "OrderItemOut",
    "OrderOut",
    "OrderStatus",
    "ProductSnapshot",
    "SessionReadyOut",
]

_PAGE = 100


class OrderClient(ServiceClient):
    async def create_bulk(
        self, group_session_id: uuid.UUID, *, idempotency_key: str
    ) -> BulkOrdersOut:
        """One order per paid participant of the session; participants that already have theirs
        are counted in `existing`, so calling again (after a crash, or at once) is safe. A
        session that is not successful raises ServiceCallError 409 `session_not_successful`;
        an unknown one 404 `session_not_found`."""
        body = BulkOrdersCreate(group_session_id=group_session_id)
        return await self.post_model(
            "/api/orders/bulk", body, BulkOrdersOut, idempotency_key=idempotency_key
        )

    async def get_order(self, order_id: uuid.UUID) -> OrderOut | None:
        return await self.get_or_none(f"/api/orders/{order_id}", OrderOut)

    async def session_orders(
        self, group_session_id: uuid.UUID, *, status: OrderStatus | None = None
    ) -> list[OrderOut]:
        """Every order of the group buy (in `status` if given), read page by page."""
        params = {"sessionId": str(group_session_id)}
        if status is not None:
            params["status"] = status.value
        return await self.get_all_pages("/api/orders", OrderOut, page_size=_PAGE, params=params)

    async def mark_session_ready(
        self, group_session_id: uuid.UUID, *, idempotency_key: str
    ) -> SessionReadyOut:
        """The group buy's goods are in hand: its processing orders become ready to ship (each
        once; the buyers are told)."""
        return await self.post_model(
            f"/api/orders/by-session/{group_session_id}/ready-to-ship",
            None,
            SessionReadyOut,
            idempotency_key=idempotency_key,
        )

    async def mark_shipped(
        self, order_id: uuid.UUID, *, tracking_number: str, courier: str, idempotency_key: str
    ) -> OrderOut:
        """processing -> shipped. An order already shipped with this tracking number is
        returned as it is; any other status raises ServiceCallError 409
        `invalid_order_transition`."""
        body = OrderShip(tracking_number=tracking_number, courier=courier)
        return await self.post_model(
            f"/api/orders/{order_id}/ship", body, OrderOut, idempotency_key=idempotency_key
        )

    async def mark_delivered(self, order_id: uuid.UUID, *, idempotency_key: str) -> OrderOut:
        """shipped -> delivered. An order already delivered is returned as it is; any other
        status raises ServiceCallError 409 `invalid_order_transition`."""
        return await self.post_model(
            f"/api/orders/{order_id}/deliver", None, OrderOut, idempotency_key=idempotency_key
        )
