import uuid
from datetime import datetime
from typing import Annotated

from pydantic import Field

from laku.core.money import MAX_RUPIAH
from laku.core.schemas import Batch, ProviderModel, Text, WireModel
from laku.wallet.rules import (
    CURRENCY,
    MIN_WITHDRAWAL,
    Bank,
    MovementReason,
    TransactionDirection,
    TransactionReason,
    WithdrawalStatus,
)

# Per bulk call, so a body stays well under the 1 MiB limit; a larger group is sent in chunks.
MAX_CREDITS_PER_CALL = 2_000

PositiveRupiah = Annotated[int, Field(strict=True, gt=0, le=MAX_RUPIAH)]
Reference = Annotated[
    str,
    Field(
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z0-9:_\-.]+$",
        examples=["session:7d0c...:participant:91a2..."],
    ),
]
IdempotencyKey = Text(255)


class WalletOut(WireModel):
    user_id: uuid.UUID
    balance: int
    currency: str = CURRENCY


class MovementCreate(WireModel):
    """A credit or a debit. The same `idempotencyKey` again returns the first transaction and
    moves nothing; with another body it is refused."""

    user_id: uuid.UUID
    amount: PositiveRupiah
    reason: MovementReason
    reference: Reference = Field(description="What the money is for, e.g. a participant")
    idempotency_key: IdempotencyKey


class BulkCreditsCreate(WireModel):
    """Credits to make together: each once per `idempotencyKey`, and all or none."""

    items: Batch(MovementCreate, MAX_CREDITS_PER_CALL, distinct="idempotency_key")


class BulkCreditsOut(WireModel):
    credited: int = Field(description="Credits made by this call.")
    already_credited: int = Field(description="Keys that had credited before; nothing moved again.")


class WalletTransactionOut(WireModel):
    id: uuid.UUID
    user_id: uuid.UUID
    direction: TransactionDirection
    amount: int
    reason: TransactionReason
    reference: str
    idempotency_key: str
    balance_after: int
    created_at: datetime


class WithdrawalCreate(WireModel):
    amount: Annotated[int, Field(strict=True, ge=MIN_WITHDRAWAL, le=MAX_RUPIAH)]
    bank_code: Bank
    account_number: Annotated[str, Field(pattern=r"^[0-9]{5,20}$", examples=["1234567890"])]
    account_holder_name: Text(100)


class WithdrawalOut(WireModel):
    id: uuid.UUID
    user_id: uuid.UUID
    amount: int
    bank_code: str
    account_number: str
    account_holder_name: str
    status: WithdrawalStatus
    payout_id: str | None
    failure_code: str | None
    created_at: datetime
    updated_at: datetime


class PayoutWebhookData(ProviderModel):
    """The payout in Xendit's webhook, named as Xendit names it. Only what finds the payout is
    read; its status, amount and the rest are ignored, as the payout is read back from Xendit."""

    id: Text(100)
    reference_id: Text(255)


class PayoutWebhook(ProviderModel):
    """Xendit's payout webhook: `payout.succeeded`, `payout.failed` or `payout.reversed` with
    the payout."""

    event: Text(100)
    data: PayoutWebhookData


class WebhookAck(WireModel):
    received: bool = True


class AuditCreditOut(WireModel):
    """A refund's wallet credit as `laku audit` traces it to payment-service's refund."""

    idempotency_key: str
    user_id: uuid.UUID
    amount: int
    reason: TransactionReason
    created_at: datetime
