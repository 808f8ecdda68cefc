import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    EmailStr,
    Field,
    field_validator,
)

from laku.core.money import Rupiah
from laku.core.schemas import Batch, ProviderModel, Text, WireModel
from laku.payment.rules import EscrowStatus, PaymentStatus, RefundReason

# The caller's own key for what is being paid, e.g. "participant:<uuid>".
Reference = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9:_\-.]+$")]
PositiveRupiah = Annotated[Rupiah, Field(gt=0)]
Description = Text(1000)

# Xendit keeps an invoice open for at most a year.
MAX_INVOICE_DURATION = timedelta(days=365)
# Per call, so a body stays well under the 1 MiB limit; a group of 10,000 is sent in chunks.
MAX_REFUNDS_PER_CALL = 2_000
MAX_PAYMENTS_PER_CALL = 5_000


def _distinct(values: list[uuid.UUID]) -> list[uuid.UUID]:
    if len(set(values)) != len(values):
        raise ValueError("must not name a payment twice")
    return values


PaymentIds = Annotated[
    list[uuid.UUID],
    Field(min_length=1, max_length=MAX_PAYMENTS_PER_CALL),
    AfterValidator(_distinct),
]


class PaymentCreate(WireModel):
    reference: Reference
    user_id: uuid.UUID
    amount: PositiveRupiah
    description: Description
    payer_email: EmailStr | None = None
    expires_at: AwareDatetime | None = Field(
        default=None, description="When the invoice stops accepting payment; default 24 hours."
    )

    @field_validator("expires_at")
    @classmethod
    def _ahead(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        remaining = value - datetime.now(UTC)
        if remaining <= timedelta(0):
            raise ValueError("expiresAt must be in the future")
        if remaining > MAX_INVOICE_DURATION:
            raise ValueError("expiresAt may be at most a year ahead")
        return value


class PaymentOut(WireModel):
    id: uuid.UUID
    payment_code: str = Field(description="The Xendit invoice's external_id.")
    reference: str
    user_id: uuid.UUID
    amount: Rupiah
    currency: str
    description: str
    status: PaymentStatus
    escrow_status: EscrowStatus
    invoice_url: str | None = Field(description="Where the buyer pays; null only while creating.")
    expires_at: datetime
    paid_at: datetime | None
    refunded_amount: Rupiah = Field(description="Given back into the buyer's wallet so far.")
    escrow_released_at: datetime | None
    created_at: datetime


class RefundItem(WireModel):
    payment_id: uuid.UUID
    amount: PositiveRupiah
    reason: RefundReason
    reference: Reference = Field(
        description="What is refunded, e.g. session:<id>:participant:<id>; refunded once. "
        "The wallet transaction carries it too."
    )


class RefundsCreate(WireModel):
    items: Batch(RefundItem, MAX_REFUNDS_PER_CALL, distinct="reference")


class RefundsOut(WireModel):
    refunded: int = Field(description="Refunds made by this call.")
    already_refunded: int = Field(description="References refunded before; nothing moved again.")
    amount: Rupiah = Field(description="What this call refunded.")


class EscrowRelease(WireModel):
    payment_ids: PaymentIds
    factory_id: uuid.UUID = Field(description="The factory the group buy's escrow goes to.")
    group_session_id: uuid.UUID = Field(description="The group buy that succeeded.")


class EscrowReleaseOut(WireModel):
    released: int = Field(description="Payments whose escrow this call released.")
    already_released: int
    amount: Rupiah = Field(description="What this call released: paid less refunded.")


class ReleasedSessionOut(WireModel):
    group_session_id: uuid.UUID
    amount: Rupiah = Field(description="Released to the factory: paid less refunded.")
    payments: int


class CancelledOrderRefundOut(WireModel):
    refund_id: uuid.UUID
    payment_id: uuid.UUID
    amount: Rupiah
    escrow_released_at: datetime


class EscrowReleasedOut(WireModel):
    """What escrow released to one factory in [from, to), by when it was released: the base
    of the factory's settlement. Refunds made after the release (cancelled orders) are already
    taken off."""

    factory_id: uuid.UUID
    from_: datetime = Field(alias="from")
    to: datetime
    total_amount: Rupiah
    payments: int
    sessions: list[ReleasedSessionOut] = Field(description="Per group buy, in id order.")
    cancelled_order_refunds: list[CancelledOrderRefundOut] = Field(
        default_factory=list,
        description="The refunds of cancelled orders among these payments, read with the "
        "figures (one snapshot): exactly those the total has taken off.",
    )


class PaymentsExpire(WireModel):
    payment_ids: PaymentIds


class PaymentsExpireOut(WireModel):
    expired: int = Field(description="Pending payments this call closed.")
    already_expired: int = Field(description="Expired (or whose creation failed) before.")
    already_paid: int = Field(description="Paid (or refunded) before: left as they are.")


class ReferenceExpiredOut(WireModel):
    reference: str
    status: Literal["void", "expired", "failed"] = Field(
        description="`void`: no payment was made for the reference, and none will be"
    )
    payment: PaymentOut | None


class XenditInvoiceCallback(ProviderModel):
    """The invoice webhook Xendit sends (its own snake_case fields; the rest, such as its
    amount and paid_at, are accepted and ignored, as Xendit adds fields over time). It is only
    a hint: the invoice is read back from Xendit, so only the fields that find it are read.
    `id`, when sent, must be the payment's invoice."""

    id: Text(100) | None = None
    external_id: Text(100)
    status: Text(32)


class WebhookAck(WireModel):
    """`processed`: the callback was applied (or had already been); `ignored`: it names no
    payment of ours, or says nothing we act on. Either way Xendit should not retry."""

    status: Literal["processed", "ignored"]


class AuditPaymentOut(WireModel):
    """A payment as `laku audit` compares it with its participant."""

    id: uuid.UUID
    reference: str
    status: PaymentStatus
    escrow_status: EscrowStatus
    amount: int
    updated_at: datetime


class AuditRefundOut(WireModel):
    """A refund as `laku audit` compares it with its wallet credit."""

    id: uuid.UUID
    user_id: uuid.UUID
    amount: int
    status: str
    created_at: datetime
