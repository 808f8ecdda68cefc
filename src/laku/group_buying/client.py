"""Typed client other services use to call group-buying-service."""

import uuid
from datetime import datetime

from laku.core.audit import AUDIT_PAGE_SIZE, AuditedClient, page_params
from laku.group_buying.rules import ParticipantStatus, PaymentEventStatus, SessionStatus, Tier
from laku.group_buying.schemas import (
    MAX_PARTICIPANTS_PAGE,
    AuditParticipantOut,
    BundleCompositionOut,
    ParticipantOut,
    PaymentEvent,
    PaymentEventOut,
    SessionOut,
)

__all__ = [
    "AuditParticipantOut",
    "BundleCompositionOut",
    "GroupBuyingClient",
    "ParticipantOut",
    "ParticipantStatus",
    "PaymentEvent",
    "PaymentEventOut",
    "PaymentEventStatus",
    "SessionOut",
    "SessionStatus",
    "Tier",
]


class GroupBuyingClient(AuditedClient):
    """Its audit: group-buying's own invariant: open sessions' paid quantities."""

    async def get_bundle_composition(self, product_id: uuid.UUID) -> BundleCompositionOut | None:
        """The product's bundle composition (warehouse: bundles to reorder), or None when the
        product has none; any other failure raises."""
        return await self.get_or_none(f"/api/bundle-composition/{product_id}", BundleCompositionOut)

    async def get_session(self, session_ref: str | uuid.UUID) -> SessionOut | None:
        """A session by id or code (status, paid quantity, tier prices, variants), or None when
        there is no such session; any other failure raises."""
        return await self.get_or_none(f"/api/group-buying/{session_ref}", SessionOut)

    async def list_participants(
        self, session_id: uuid.UUID, *, status: ParticipantStatus | None = None
    ) -> list[ParticipantOut]:
        """Every participant of the session (optionally of one status), oldest first."""
        return await self.get_all_pages(
            f"/api/group-buying/{session_id}/participants",
            ParticipantOut,
            page_size=MAX_PARTICIPANTS_PAGE,
            params={} if status is None else {"status": status},
        )

    async def report_payment(self, event: PaymentEvent, *, idempotency_key: str) -> PaymentEventOut:
        """Tell group-buying a participant's payment was paid, expired or failed. An event
        naming no participant, or one already applied, is acknowledged as `ignored`."""
        return await self.post_model(
            "/api/group-buying/payment-events",
            event,
            PaymentEventOut,
            idempotency_key=idempotency_key,
        )

    async def report_stock_received(
        self, session_id: uuid.UUID, *, idempotency_key: str
    ) -> SessionOut:
        """Tell group-buying the warehouse has fulfilled a session that waited for stock: its
        escrow is released and it succeeds. A session already successful is returned as it is;
        one not waiting for stock, or whose fulfilment is not complete, raises
        ServiceCallError 409."""
        return await self.post_model(
            f"/api/group-buying/{session_id}/stock-received",
            None,
            SessionOut,
            idempotency_key=idempotency_key,
        )

    async def audit_participants(
        self,
        after: uuid.UUID | None,
        changed_since: datetime | None = None,
        limit: int = AUDIT_PAGE_SIZE,
    ) -> list[AuditParticipantOut]:
        """A page of participants pending payment or paid (and any other changed since
        `changed_since`), by id after `after`."""
        params = page_params(str(after) if after else None, None, limit)
        if changed_since is not None:
            params["changedSince"] = changed_since.isoformat()
        return await self.get_list(
            "/api/admin/audit/participants", AuditParticipantOut, params=params
        )
