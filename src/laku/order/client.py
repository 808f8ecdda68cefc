"""Typed client other services use to call order-service (group-buying: create a successful
group buy's orders when it closes; logistics: mark orders shipped and delivered)."""

import uuid

from laku.core.http import ServiceClient
from laku.order.schemas import (
    BulkOrdersCreate,
    BulkOrdersOut,
    OrderItemOut,
    OrderOut,
    OrderShip,
    OrderStatus,
    ProductSnapshot,
)

__all__ = [
    "BulkOrdersOut",
    "OrderClient",
    "OrderItemOut",
    "OrderOut",
    "OrderStatus",
    "ProductSnapshot",
]


class OrderClient(ServiceClient):
    async def create_bulk(
        self, group_session_id: uuid.UUID, *, idempotency_key: str
    ) -> BulkOrdersOut:
        """One order per paid participant of the session; participants that already have theirs
        are counted in `existing`, so calling again (after a crash, or at once) is safe. A
        session that is not successful raises ServiceCallError 409 `session_not_successful`;
        an unknown one 404 `session_not_found`."""
        body = BulkOrdersCreate(group_session_id=group_session_id)
        response = await self.request(
            "POST",
            "/api/orders/bulk",
            json=body.model_dump(mode="json", by_alias=True),
            idempotency_key=idempotency_key,
        )
        return BulkOrdersOut.model_validate(response.json())

    async def get_order(self, order_id: uuid.UUID) -> OrderOut | None:
        return await self.get_or_none(f"/api/orders/{order_id}", OrderOut)

    async def mark_shipped(
        self, order_id: uuid.UUID, *, tracking_number: str, courier: str, idempotency_key: str
    ) -> OrderOut:
        """processing -> shipped. An order already shipped with this tracking number is
        returned as it is; any other status raises ServiceCallError 409
        `invalid_order_transition`."""
        body = OrderShip(tracking_number=tracking_number, courier=courier)
        response = await self.request(
            "POST",
            f"/api/orders/{order_id}/ship",
            json=body.model_dump(mode="json", by_alias=True),
            idempotency_key=idempotency_key,
        )
        return OrderOut.model_validate(response.json())

    async def mark_delivered(self, order_id: uuid.UUID, *, idempotency_key: str) -> OrderOut:
        """shipped -> delivered. An order already delivered is returned as it is; any other
        status raises ServiceCallError 409 `invalid_order_transition`."""
        response = await self.request(
            "POST", f"/api/orders/{order_id}/deliver", idempotency_key=idempotency_key
        )
        return OrderOut.model_validate(response.json())
