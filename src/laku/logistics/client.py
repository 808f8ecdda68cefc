"""Typed client other services use to call logistics-service (book an order's shipment, or a
group buy's in bulk; read one)."""

import uuid

from laku.core.http import ServiceClient
from laku.logistics.schemas import (
    BulkShipmentsCreate,
    BulkShipmentsOut,
    ShipmentCreate,
    ShipmentDetailOut,
    TrackingEventOut,
)

__all__ = ["BulkShipmentsOut", "LogisticsClient", "ShipmentDetailOut", "TrackingEventOut"]


class LogisticsClient(ServiceClient):
    async def create_shipment(
        self,
        order_id: uuid.UUID,
        *,
        courier_company: str,
        courier_type: str,
        idempotency_key: str,
        address_id: uuid.UUID | None = None,
    ) -> ShipmentDetailOut:
        """Book the courier for a processing order (the buyer's default address unless
        `address_id`); the order's shipment if it has one. ServiceCallError 409
        `order_not_shippable` for an order that is not processing."""
        body = ShipmentCreate(
            order_id=order_id,
            courier_company=courier_company,
            courier_type=courier_type,
            address_id=address_id,
        )
        return await self.post_model(
            "/api/shipments",
            body,
            ShipmentDetailOut,
            idempotency_key=idempotency_key,
            exclude_none=True,
        )

    async def book_session(
        self, group_session_id: uuid.UUID, *, idempotency_key: str
    ) -> BulkShipmentsOut:
        """Book the shipments of the group buy's ready orders (in parcels per address); those
        booked before are counted in `existing`. ServiceCallError 409 `shipment_in_progress`
        while another call books some of them, 503 while Biteship is unavailable: retry."""
        body = BulkShipmentsCreate(group_session_id=group_session_id)
        return await self.post_model(
            "/api/shipments/bulk", body, BulkShipmentsOut, idempotency_key=idempotency_key
        )

    async def get_shipment(self, shipment_id: uuid.UUID) -> ShipmentDetailOut | None:
        return await self.get_or_none(f"/api/shipments/{shipment_id}", ShipmentDetailOut)
