import uuid
from datetime import datetime
from typing import Annotated

from pydantic import Field

from laku.core.schemas import PartialUpdate, Text, WireModel

Label = Text(50, examples=["Rumah"])
RecipientName = Text(200)
Phone = Annotated[str, Field(pattern=r"^\+?[0-9]{8,15}$", examples=["+6281234567890"])]
Street = Text(500)
Region = Text(100)
PostalCode = Annotated[str, Field(pattern=r"^[0-9]{5}$", examples=["12190"])]
Notes = Text(500, min_length=0)


class AddressCreate(WireModel):
    # Optional: the token says whose address this is; when sent, it must be the caller.
    user_id: uuid.UUID | None = None
    label: Label
    recipient_name: RecipientName
    phone: Phone
    street: Street
    city: Region
    province: Region
    postal_code: PostalCode
    notes: Notes | None = None
    is_default: bool = False


class AddressUpdate(PartialUpdate):
    """`notes: null` clears the notes; an empty update changes nothing."""

    CLEARABLE = frozenset({"notes"})
    CHANGES_SOMETHING = False

    label: Label | None = None
    recipient_name: RecipientName | None = None
    phone: Phone | None = None
    street: Street | None = None
    city: Region | None = None
    province: Region | None = None
    postal_code: PostalCode | None = None
    notes: Notes | None = None
    is_default: bool | None = None


class AddressOut(WireModel):
    id: uuid.UUID
    user_id: uuid.UUID
    label: str
    recipient_name: str
    phone: str
    street: str
    city: str
    province: str
    postal_code: str
    notes: str | None
    is_default: bool
    created_at: datetime
    updated_at: datetime
