"""Typed client other services use to call payment-service (group-buying: the escrow payment of
a join, read back its status, and expire its invoice when the session closes first)."""

import uuid

from laku.core.http import ServiceClient
from laku.payment.schemas import EscrowStatus, PaymentCreate, PaymentOut, PaymentStatus

__all__ = ["EscrowStatus", "PaymentClient", "PaymentCreate", "PaymentOut", "PaymentStatus"]


class PaymentClient(ServiceClient):
    async def create_payment(self, request: PaymentCreate, *, idempotency_key: str) -> PaymentOut:
        """Create the payment and its Xendit invoice (`invoiceUrl` is where the buyer pays).
        The same `reference` again returns the first payment, never a second invoice. Xendit
        unreachable (503, retried here first) raises UpstreamUnavailable; calling again later
        with the same reference is safe."""
        response = await self.request(
            "POST",
            "/api/payments",
            json=request.model_dump(mode="json", by_alias=True, exclude_none=True),
            idempotency_key=idempotency_key,
        )
        return PaymentOut.model_validate(response.json())

    async def get_payment(self, payment_id: uuid.UUID) -> PaymentOut | None:
        return await self.get_or_none(f"/api/payments/{payment_id}", PaymentOut)

    async def expire_payment(self, payment_id: uuid.UUID, *, idempotency_key: str) -> PaymentOut:
        """Close the invoice so it can no longer be paid; a payment already expired is returned
        as it is. A paid one raises ServiceCallError 409 `payment_already_paid`."""
        response = await self.request(
            "POST", f"/api/payments/{payment_id}/expire", idempotency_key=idempotency_key
        )
        return PaymentOut.model_validate(response.json())
