import uuid
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, EmailStr, Field, field_validator

from laku.core.money import Rupiah
from laku.core.schemas import WireModel

# The caller's own key for what is being paid, e.g. "participant:<uuid>".
Reference = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9:_\-.]+$")]
PositiveRupiah = Annotated[Rupiah, Field(gt=0)]
Description = Annotated[str, Field(min_length=1, max_length=1000)]

# Xendit keeps an invoice open for at most a year.
MAX_INVOICE_DURATION = timedelta(days=365)


class PaymentStatus(StrEnum):
    PENDING = "pending"
    PAID = "paid"
    EXPIRED = "expired"
    FAILED = "failed"
    REFUNDED = "refunded"


class EscrowStatus(StrEnum):
    """`held` from the moment the buyer pays until the group succeeds (released) or fails
    (refunded); `none` while nothing has been paid."""

    NONE = "none"
    HELD = "held"
    RELEASED = "released"
    REFUNDED = "refunded"


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
    created_at: datetime


class XenditInvoiceCallback(BaseModel):
    """The invoice webhook Xendit sends (its own snake_case fields; those we do not use are
    accepted and ignored, as Xendit adds fields over time)."""

    model_config = ConfigDict(extra="ignore")

    id: Annotated[str, Field(min_length=1, max_length=100)]
    external_id: Annotated[str, Field(min_length=1, max_length=100)]
    status: Annotated[str, Field(min_length=1, max_length=32)]
    amount: int | None = None
    paid_amount: int | None = None
    paid_at: datetime | None = None


class WebhookAck(WireModel):
    """`processed`: the callback was applied (or had already been); `ignored`: it names no
    payment of ours, or says nothing we act on. Either way Xendit should not retry."""

    status: Literal["processed", "ignored"]
