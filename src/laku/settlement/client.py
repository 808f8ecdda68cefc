"""Typed client other services use to call settlement-service: a factory's settlements and
what settling it for a period would come to; payment-service reports refunds of escrow it had
released to a factory, warehouse-service a warehouse invoice paid."""

import uuid
from datetime import datetime

from laku.core.audit import AuditedClient
from laku.core.schemas import Page
from laku.settlement.rules import SettlementStatus
from laku.settlement.schemas import (
    AuditSettlementOut,
    EscrowRefundIn,
    EscrowRefundsOut,
    EscrowRefundsReport,
    LedgerEntryOut,
    SettlementDetailOut,
    SettlementOut,
    SettlementPreviewOut,
    SettlementSessionOut,
    WarehouseInvoicePaid,
)

__all__ = [
    "AuditSettlementOut",
    "EscrowRefundIn",
    "EscrowRefundsOut",
    "EscrowRefundsReport",
    "LedgerEntryOut",
    "SettlementClient",
    "SettlementDetailOut",
    "SettlementOut",
    "SettlementPreviewOut",
    "SettlementSessionOut",
    "SettlementStatus",
    "WarehouseInvoicePaid",
]


class SettlementClient(AuditedClient):
    """Its audit: settlement-service's own invariant: every ledger entry balanced."""

    AUDIT_PATH = "/api/admin/audit/ledger"

    async def record_warehouse_invoice_paid(
        self, paid: WarehouseInvoicePaid, *, idempotency_key: str
    ) -> LedgerEntryOut:
        """Post the paid invoice's ledger entry, once per invoice (again: the same entry)."""
        return await self.post_model(
            "/api/ledger/warehouse-invoices", paid, LedgerEntryOut, idempotency_key=idempotency_key
        )

    async def get_settlement(self, settlement_id: uuid.UUID) -> SettlementDetailOut | None:
        """With the group buys it covered and its ledger entries; None when there is none."""
        return await self.get_or_none(f"/api/settlements/{settlement_id}", SettlementDetailOut)

    async def preview(
        self, factory_id: uuid.UUID, period_start: datetime, period_end: datetime
    ) -> SettlementPreviewOut:
        """What settling the factory for [period_start, period_end) would come to; nothing is
        stored. An unknown factory raises ServiceCallError 422 `unknown_factory`."""
        return await self.get_model(
            "/api/settlements/preview",
            SettlementPreviewOut,
            params={
                "factoryId": str(factory_id),
                "periodStart": period_start.isoformat(),
                "periodEnd": period_end.isoformat(),
            },
        )

    async def list_settlements(
        self,
        *,
        factory_id: uuid.UUID | None = None,
        status: SettlementStatus | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> Page[SettlementOut]:
        """Newest period first."""
        params: dict[str, str | int] = {"limit": limit, "offset": offset}
        if factory_id is not None:
            params["factoryId"] = str(factory_id)
        if status is not None:
            params["status"] = status.value
        return await self.get_model("/api/settlements", Page[SettlementOut], params=params)

    async def report_escrow_refunds(
        self, report: EscrowRefundsReport, *, idempotency_key: str
    ) -> EscrowRefundsOut:
        """Refunds of escrow released to factories (cancelled orders), each accounted for once
        by its refund id however often it is reported."""
        return await self.post_model(
            "/api/settlements/escrow-refunds",
            report,
            EscrowRefundsOut,
            idempotency_key=idempotency_key,
        )

    async def audit_settlements(
        self, after: uuid.UUID | None, limit: int
    ) -> list[AuditSettlementOut]:
        """A page of settlements by id after `after`."""
        return await self.audit_page(
            "settlements", AuditSettlementOut, str(after) if after else None, None, limit
        )
