"""Typed client other services use to call group-buying-service."""

import uuid

from laku.core.http import ServiceClient
from laku.group_buying.rules import SessionStatus, Tier
from laku.group_buying.schemas import (
    BundleCompositionOut,
    PaymentEvent,
    PaymentEventOut,
    PaymentEventStatus,
    SessionOut,
)

__all__ = [
    "BundleCompositionOut",
    "GroupBuyingClient",
    "PaymentEvent",
    "PaymentEventOut",
    "PaymentEventStatus",
    "SessionOut",
    "SessionStatus",
    "Tier",
]


class GroupBuyingClient(ServiceClient):
    async def get_bundle_composition(self, product_id: uuid.UUID) -> BundleCompositionOut | None:
        """The product's bundle composition (warehouse: bundles to reorder), or None when the
        product has none; any other failure raises."""
        return await self.get_or_none(f"/api/bundle-composition/{product_id}", BundleCompositionOut)

    async def get_session(self, session_ref: str | uuid.UUID) -> SessionOut | None:
        """A session by id or code (status, paid quantity, tier prices, variants), or None when
        there is no such session; any other failure raises."""
        return await self.get_or_none(f"/api/group-buying/{session_ref}", SessionOut)

    async def report_payment(self, event: PaymentEvent, *, idempotency_key: str) -> PaymentEventOut:
        """Tell group-buying a participant's payment was paid, expired or failed. An event
        naming no participant, or one already applied, is acknowledged as `ignored`."""
        response = await self.request(
            "POST",
            "/api/group-buying/payment-events",
            json=event.model_dump(mode="json", by_alias=True),
            idempotency_key=idempotency_key,
        )
        return PaymentEventOut.model_validate(response.json())
