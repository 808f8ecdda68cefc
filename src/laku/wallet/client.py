"""Typed client other services use to call wallet-service (payment: credit tier refunds and
failed-group refunds into buyers' wallets, one at a time or a closed group's in bulk)."""

import hashlib
import json
import uuid
from collections.abc import Sequence

from laku.core.audit import AUDIT_PAGE_SIZE, AuditedClient
from laku.wallet.rules import Bank, MovementReason, TransactionDirection, TransactionReason
from laku.wallet.schemas import (
    MAX_CREDITS_PER_CALL,
    AuditCreditOut,
    BulkCreditsCreate,
    BulkCreditsOut,
    MovementCreate,
    WalletOut,
    WalletTransactionOut,
)

__all__ = [
    "MAX_CREDITS_PER_CALL",
    "AuditCreditOut",
    "Bank",
    "BulkCreditsOut",
    "MovementCreate",
    "MovementReason",
    "TransactionDirection",
    "TransactionReason",
    "WalletClient",
    "WalletOut",
    "WalletTransactionOut",
]


class WalletClient(AuditedClient):
    """Its audit: wallet-service's own invariants: balances, withdrawals and their reversals."""

    async def credit(
        self,
        user_id: uuid.UUID,
        amount: int,
        reason: MovementReason,
        reference: str,
        *,
        idempotency_key: str,
    ) -> WalletTransactionOut:
        """Add `amount` to the user's wallet once per `idempotency_key` (derive it from what is
        refunded, e.g. `tier-refund:<participantId>`): repeating the call returns the first
        transaction. The same key with another amount, reason, reference or user raises
        ServiceCallError with status 409, code `idempotency_key_reused`."""
        body = MovementCreate(
            user_id=user_id,
            amount=amount,
            reason=reason,
            reference=reference,
            idempotency_key=idempotency_key,
        ).model_dump(mode="json", by_alias=True)
        response = await self.request(
            "POST",
            "/api/wallets/credits",
            json=body,
            # The header key names the whole body, so a key reused for another credit reaches
            # the wallet, which refuses it as such (409), rather than being refused by the
            # HTTP idempotency layer (422).
            idempotency_key=f"credit:{_digest(body)}",
        )
        return WalletTransactionOut.model_validate(response.json())

    async def credit_bulk(
        self, items: Sequence[MovementCreate], *, idempotency_key: str
    ) -> BulkCreditsOut:
        """Up to MAX_CREDITS_PER_CALL credits in one transaction (send more in chunks), each
        once per its `idempotencyKey`: repeating them credits nothing (`alreadyCredited`). A
        key used before for another credit raises ServiceCallError 409 `idempotency_key_reused`
        and nothing is credited. `idempotency_key` names this call (the same items each time)."""
        return await self.post_model(
            "/api/wallets/credits/bulk",
            BulkCreditsCreate(items=list(items)),
            BulkCreditsOut,
            idempotency_key=idempotency_key,
        )

    async def get_wallet(self, user_id: uuid.UUID) -> WalletOut:
        """The user's balance (0 for a user never credited)."""
        return await self.get_model(f"/api/wallets/{user_id}", WalletOut)

    async def audit_refund_credits(
        self, after: str | None, through: str | None, limit: int = AUDIT_PAGE_SIZE
    ) -> list[AuditCreditOut]:
        """A page of refund credits by idempotency key (byte order) in (after, through]."""
        return await self.audit_page("refund-credits", AuditCreditOut, after, through, limit)


def _digest(body: dict[str, object]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
