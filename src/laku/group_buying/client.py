"""Typed client other services use to call group-buying-service."""

import uuid

from laku.core.http import ServiceCallError, ServiceClient
from laku.group_buying.schemas import BundleCompositionOut, PaymentEvent, PaymentEventStatus

__all__ = ["BundleCompositionOut", "GroupBuyingClient", "PaymentEvent", "PaymentEventStatus"]


class GroupBuyingClient(ServiceClient):
    async def get_bundle_composition(self, product_id: uuid.UUID) -> BundleCompositionOut | None:
        """The product's bundle composition (warehouse: bundles to reorder), or None when the
        product has none; any other failure raises."""
        try:
            response = await self.request("GET", f"/api/bundle-composition/{product_id}")
        except ServiceCallError as exc:
            if exc.status == 404:
                return None
            raise
        return BundleCompositionOut.model_validate(response.json())

    async def report_payment(self, event: PaymentEvent, *, idempotency_key: str) -> None:
        """Tell group-buying a participant's payment was paid, expired or failed."""
        await self.request(
            "POST",
            "/api/group-buying/payment-events",
            json=event.model_dump(mode="json", by_alias=True),
            idempotency_key=idempotency_key,
        )
