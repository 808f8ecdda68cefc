"""Typed client other services use to call warehouse-service (group-buying: reserve stock for a
join, release it when the join fails or the invoice expires, deduct it when the group ships)."""

import uuid
from datetime import datetime

from laku.core.audit import AUDIT_PAGE_SIZE, AuditedClient
from laku.core.batches import digest
from laku.core.http import ServiceCallError
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
    return digest(sorted(references))


class WarehouseClient(AuditedClient):
    """Its audit: the warehouse's own invariants: stock against its ledger and its reservations."""

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
        return await self.post_model(
            "/api/reservations",
            body,
            ReservationOut,
            idempotency_key=f"reserve:{reference}",
            exclude_none=True,
        )

    async def release(self, reference: str) -> ReservationOut:
        """Give the stock back. A reference never reserved is voided (status `void`): a
        reserve under it arriving later is refused, so an undo outruns no late reserve."""
        return await self.post_model(
            f"/api/reservations/{reference}/release",
            None,
            ReservationOut,
            idempotency_key=f"release:{reference}",
        )

    async def confirm(self, reference: str) -> ReservationOut:
        """The hold's join was paid: it never lapses now. A hold already released raises
        ServiceCallError 409 `reservation_released` (the payer is owed a refund)."""
        return await self.post_model(
            f"/api/reservations/{reference}/confirm",
            None,
            ReservationOut,
            idempotency_key=f"confirm:{reference}",
        )

    async def deduct(self, reference: str) -> ReservationOut | None:
        try:
            return await self.post_model(
                f"/api/reservations/{reference}/deduct",
                None,
                ReservationOut,
                idempotency_key=f"deduct:{reference}",
            )
        except ServiceCallError as exc:
            if exc.status == 404:
                return None
            raise

    async def release_group(
        self, group: str, references: list[str] | None = None
    ) -> GroupReleaseOut:
        """Release a group buy's reservations: all, or only `references`; idempotent."""
        return await self.post_model(
            f"/api/reservation-groups/{group}/release",
            GroupRelease(references=references),
            GroupReleaseOut,
            idempotency_key=f"release:{group}:{_references_key(references)}",
        )

    async def confirm_group(self, group: str, references: list[str]) -> GroupConfirmOut:
        """Name up to MAX_REFERENCES_PER_CALL of a closing group's paid reservations (send
        more in chunks): the fulfilment takes these and releases the others. Idempotent."""
        return await self.post_model(
            f"/api/reservation-groups/{group}/confirm",
            GroupConfirm(references=references),
            GroupConfirmOut,
            idempotency_key=f"confirm:{group}:{_references_key(references)}",
        )

    async def fulfil_group(self, group: str, product_id: uuid.UUID) -> FulfilmentOut:
        """Take a closed group buy's confirmed reservations out of stock (or wait for
        bundles) and release the group's others."""
        return await self.post_model(
            f"/api/reservation-groups/{group}/fulfil",
            FulfilmentCreate(product_id=product_id),
            FulfilmentOut,
            idempotency_key=f"fulfil:{group}",
        )

    async def product_stock(self, product_id: uuid.UUID) -> ProductStockOut | None:
        """Every variant's stock and status for one product; None when it has no inventory."""
        stock = await self.get_list(
            "/api/inventory", ProductStockOut, params={"productId": str(product_id)}
        )
        return stock[0] if stock else None

    async def audit_reservations(
        self, after: str | None, through: str | None, limit: int = AUDIT_PAGE_SIZE
    ) -> list[AuditReservationOut]:
        """A page of reservations by reference (byte order) in (after, through]."""
        return await self.audit_page("reservations", AuditReservationOut, after, through, limit)
