import uuid
from datetime import datetime
from typing import Annotated

from pydantic import EmailStr, Field, model_validator

from laku.core.schemas import MultilineText, PartialUpdate, Text, WireModel
from laku.factory.rules import VerificationStatus

# Same rules as auth-service applies to an account's phone and password.
Phone = Annotated[str, Field(pattern=r"^\+?[0-9]{8,15}$")]
Password = Annotated[str, Field(min_length=8, max_length=128)]
PostalCode = Annotated[str, Field(pattern=r"^[0-9]{5}$", description="Indonesian postal code")]
Name = Text(200)
Address = Text(1000)
City = Text(100)
Reason = Text(1000)


class FactoryCreate(WireModel):
    name: Name
    owner_name: Name
    phone: Phone = Field(description="WhatsApp number: digits with an optional leading +")
    email: EmailStr | None = None
    address: Address
    city: City | None = None
    postal_code: PostalCode


class FactoryUpdate(PartialUpdate):
    """Partial update of contact fields: `null` clears an optional one (email, city)."""

    CLEARABLE = frozenset({"email", "city"})

    name: Name | None = None
    owner_name: Name | None = None
    phone: Phone | None = None
    email: EmailStr | None = None
    address: Address | None = None
    city: City | None = None
    postal_code: PostalCode | None = None


class VerificationUpdate(WireModel):
    status: VerificationStatus
    reason: Reason | None = None

    @model_validator(mode="after")
    def _rejection_has_reason(self) -> "VerificationUpdate":
        if self.status is VerificationStatus.REJECTED and self.reason is None:
            raise ValueError("a rejection needs a reason")
        return self


class FactoryOut(WireModel):
    id: uuid.UUID
    name: str
    owner_name: str
    phone: str
    email: str | None
    address: str
    city: str | None
    postal_code: str
    verification_status: VerificationStatus
    verification_reason: str | None
    verified_at: datetime | None
    average_rating: float | None = Field(description="Mean review rating, 2 decimals")
    review_count: int
    created_at: datetime
    updated_at: datetime


class ReviewCreate(WireModel):
    rating: Annotated[int, Field(strict=True, ge=1, le=5)]
    comment: MultilineText(2000) | None = None


class ReviewOut(WireModel):
    id: uuid.UUID
    factory_id: uuid.UUID
    user_id: uuid.UUID
    rating: int
    comment: str | None
    created_at: datetime


class FactoryUserCreate(WireModel):
    """A login for the factory's staff; the account is bound to this factory."""

    email: EmailStr
    password: Password
    name: Name
    phone: Phone | None = None
