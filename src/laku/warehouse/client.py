"""Typed client other services use to call warehouse-service (group-buying: reserve stock for a
join, release it when the join fails or the invoice expires, deduct it when the group ships)."""

import hashlib
import uuid

from laku.core.audit import AUDIT_PAGE_SIZE, AuditOut, page_params
from laku.core.http import ServiceCallError, ServiceClient
from laku.warehouse.schemas import (
    AuditReservationOut,
    FulfilmentCreate,
    FulfilmentOut,
    FulfilmentStatus,
    GroupRelease,
    GroupReleaseOut,
    InventoryOut,
    ProductStockOut,
    ReservationCreate,
    ReservationOut,
)

__all__ = [
    "AuditReservationOut",
    "FulfilmentOut",
    "FulfilmentStatus",
    "GroupReleaseOut",
    "InventoryOut",
    "ProductStockOut",
    "ReservationOut",
    "WarehouseClient",
]


def _references_key(references: list[str] | None) -> str:
    """Names a release's set of reservations in its idempotency key."""
    if references is None:
        return "all"
    return hashlib.sha256("\n".join(sorted(references)).encode()).hexdigest()[:32]


class WarehouseClient(ServiceClient):
    async def reserve(
        self, reference: str, variant_id: uuid.UUID, quantity: int, *, group: str | None = None
    ) -> ReservationOut:
        """Reserve under `reference` (idempotent: the same reference returns that reservation),
        as part of `group` (e.g. "session:<id>") when given. Not enough stock raises
        ServiceCallError with status 409, code `insufficient_stock`."""
        body = ReservationCreate(
            reference=reference, variant_id=variant_id, quantity=quantity, group=group
        )
        response = await self.request(
            "POST",
            "/api/reservations",
            json=body.model_dump(mode="json", by_alias=True),
            idempotency_key=f"reserve:{reference}",
        )
        return ReservationOut.model_validate(response.json())

    async def release(self, reference: str) -> ReservationOut | None:
        """Give the stock back; None when nothing was ever reserved under `reference`."""
        return await self._transition(reference, "release")

    async def deduct(self, reference: str) -> ReservationOut | None:
        return await self._transition(reference, "deduct")

    async def _transition(self, reference: str, action: str) -> ReservationOut | None:
        try:
            response = await self.request(
                "POST",
                f"/api/reservations/{reference}/{action}",
                idempotency_key=f"{action}:{reference}",
            )
        except ServiceCallError as exc:
            if exc.status == 404:
                return None
            raise
        return ReservationOut.model_validate(response.json())

    async def release_group(
        self, group: str, references: list[str] | None = None
    ) -> GroupReleaseOut:
        """Release a group buy's reservations: all, or only `references`; idempotent."""
        body = GroupRelease(references=references)
        response = await self.request(
            "POST",
            f"/api/reservation-groups/{group}/release",
            json=body.model_dump(mode="json", by_alias=True),
            idempotency_key=f"release:{group}:{_references_key(references)}",
        )
        return GroupReleaseOut.model_validate(response.json())

    async def fulfil_group(self, group: str, product_id: uuid.UUID) -> FulfilmentOut:
        """Take a closed group buy's reservations out of stock (or wait for bundles)."""
        response = await self.request(
            "POST",
            f"/api/reservation-groups/{group}/fulfil",
            json=FulfilmentCreate(product_id=product_id).model_dump(mode="json", by_alias=True),
            idempotency_key=f"fulfil:{group}",
        )
        return FulfilmentOut.model_validate(response.json())

    async def product_stock(self, product_id: uuid.UUID) -> ProductStockOut | None:
        """Every variant's stock and status for one product; None when it has no inventory."""
        response = await self.request(
            "GET", "/api/inventory", params={"productId": str(product_id)}
        )
        stock = [ProductStockOut.model_validate(item) for item in response.json()]
        return stock[0] if stock else None

    async def audit(self) -> AuditOut:
        """The warehouse's own invariants: stock against its ledger and its reservations."""
        response = await self.request("GET", "/api/admin/audit")
        return AuditOut.model_validate(response.json())

    async def audit_reservations(
        self, after: str | None, through: str | None, limit: int = AUDIT_PAGE_SIZE
    ) -> list[AuditReservationOut]:
        """A page of reservations by reference (byte order) in (after, through]."""
        response = await self.request(
            "GET",
            "/api/admin/audit/reservations",
            params=page_params(after, through, limit),
        )
        return [AuditReservationOut.model_validate(item) for item in response.json()]
