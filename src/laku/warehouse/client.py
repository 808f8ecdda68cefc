"""Typed client other services use to call warehouse-service (group-buying: reserve stock for a
join, release it when the join fails or the invoice expires, deduct it when the group ships)."""

import hashlib
import uuid
from datetime import datetime

from laku.core.audit import AUDIT_PAGE_SIZE, AuditOut, page_params
from laku.core.http import ServiceCallError, ServiceClient
from laku.warehouse.rules import FulfilmentStatus
from laku.warehouse.schemas import (
    MAX_REFERENCES_PER_CALL,
    AuditReservationOut,
    FulfilmentCreate,
    FulfilmentOut,
    GroupConfirm,
    GroupConfirmOut,
    GroupRelease,
    GroupReleaseOut,
    InventoryOut,
    ProductStockOut,
    ReservationCreate,
    ReservationOut,
)

__all__ = [
    "MAX_REFERENCES_PER_CALL",
    "AuditReservationOut",
    "FulfilmentOut",
    "FulfilmentStatus",
    "GroupConfirmOut",
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
        self,
        reference: str,
        variant_id: uuid.UUID,
        quantity: int,
        *,
        group: str | None = None,
        expires_at: datetime | None = None,
    ) -> ReservationOut:
        """Hold stock under `reference` until `expires_at` (at most the warehouse's longest
        hold, its default) unless confirmed, as part of `group` (e.g. "session:<id>") when
        given. Idempotent: the same reference returns that reservation. Not enough stock raises
        ServiceCallError 409 `insufficient_stock`; a reference released before it was reserved,
        409 `reservation_released`."""
        body = ReservationCreate(
            reference=reference,
            variant_id=variant_id,
            quantity=quantity,
            group=group,
            expires_at=expires_at,
        )
        response = await self.request(
            "POST",
            "/api/reservations",
            json=body.model_dump(mode="json", by_alias=True, exclude_none=True),
            idempotency_key=f"reserve:{reference}",
        )
        return ReservationOut.model_validate(response.json())

    async def release(self, reference: str) -> ReservationOut:
        """Give the stock back. A reference never reserved is voided (status `void`): a
        reserve under it arriving later is refused, so an undo outruns no late reserve."""
        response = await self.request(
            "POST",
            f"/api/reservations/{reference}/release",
            idempotency_key=f"release:{reference}",
        )
        return ReservationOut.model_validate(response.json())

    async def confirm(self, reference: str) -> ReservationOut:
        """The hold's join was paid: it never lapses now. A hold already released raises
        ServiceCallError 409 `reservation_released` (the payer is owed a refund)."""
        response = await self.request(
            "POST",
            f"/api/reservations/{reference}/confirm",
            idempotency_key=f"confirm:{reference}",
        )
        return ReservationOut.model_validate(response.json())

    async def deduct(self, reference: str) -> ReservationOut | None:
        try:
            response = await self.request(
                "POST",
                f"/api/reservations/{reference}/deduct",
                idempotency_key=f"deduct:{reference}",
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

    async def confirm_group(self, group: str, references: list[str]) -> GroupConfirmOut:
        """Name up to MAX_REFERENCES_PER_CALL of a closing group's paid reservations (send
        more in chunks): the fulfilment takes these and releases the others. Idempotent."""
        response = await self.request(
            "POST",
            f"/api/reservation-groups/{group}/confirm",
            json=GroupConfirm(references=references).model_dump(mode="json", by_alias=True),
            idempotency_key=f"confirm:{group}:{_references_key(references)}",
        )
        return GroupConfirmOut.model_validate(response.json())

    async def fulfil_group(self, group: str, product_id: uuid.UUID) -> FulfilmentOut:
        """Take a closed group buy's confirmed reservations out of stock (or wait for
        bundles) and release the group's others."""
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
