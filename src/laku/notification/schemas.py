import base64
import re
import uuid
from datetime import datetime
from typing import Annotated

from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import (
    EmailStr,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from laku.core.schemas import MAX_BIGINT, Batch, MultilineText, Text, WireModel
from laku.notification.rules import Channel, NotificationStatus, whatsapp_number

_email_address: TypeAdapter[str] = TypeAdapter(EmailStr)

# WhatsApp's own limits: a text body up to 4096 characters, template names in lower snake case.
Message = MultilineText(4096)
Subject = Text(200)
TemplateName = Annotated[str, Field(pattern=r"^[a-z0-9_]{1,512}$", examples=["purchase_order"])]
LanguageCode = Annotated[str, Field(pattern=r"^[a-z]{2,3}(_[A-Z]{2})?$", examples=["id", "en_US"])]
TemplateParam = Text(1024)
EventKey = Annotated[
    str,
    Field(
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z0-9:_\-.]+$",
        examples=["joined:6f1c2d3e-1111-4a5b-9c8d-0123456789ab"],
    ),
]

# Per call; a larger group is told in chunks. The body must also fit LAKU_MAX_BODY_BYTES
# (1 MiB), which 2,000 texts of a few hundred characters do.
MAX_USER_NOTIFICATIONS_PER_CALL = 2_000


class TemplateMessage(WireModel):
    """A pre-approved WhatsApp template and the values of its body's {{1}}, {{2}}... in order."""

    name: TemplateName
    language: LanguageCode
    params: Annotated[list[TemplateParam], Field(max_length=100, default_factory=list)]


class NotificationRequest(WireModel):
    """`text` is always the readable message; for a WhatsApp template it is what the template
    says once filled in, kept so the notification can be read without the template."""

    channel: Channel
    user_id: uuid.UUID | None = None
    to: Text(320) | None = None
    subject: Subject | None = None
    text: Message
    template: TemplateMessage | None = None

    @model_validator(mode="after")
    def _fits_the_channel(self) -> "NotificationRequest":
        match self.channel:
            case Channel.WHATSAPP:
                self.to = whatsapp_number(self.to)
                if self.subject is not None:
                    raise ValueError("whatsapp messages have no subject")
            case Channel.EMAIL:
                if self.to is None or not _is_email_address(self.to):
                    raise ValueError("email needs `to` as an e-mail address")
                if self.subject is None:
                    raise ValueError("email needs a subject")
            case Channel.IN_APP | Channel.PUSH:
                if self.user_id is None:
                    raise ValueError(f"{self.channel} needs userId")
                if self.to is not None:
                    raise ValueError(
                        f"{self.channel} notifications have no `to`; they go to userId"
                    )
        if self.template is not None and self.channel is not Channel.WHATSAPP:
            raise ValueError("templates are WhatsApp messages")
        return self


def _is_email_address(value: str) -> bool:
    try:
        _email_address.validate_python(value)
    except ValidationError:
        return False
    return True


class UserNotification(WireModel):
    """One event to tell one user, on every channel the user can be reached on: in the app,
    by e-mail (every account has an address), on WhatsApp (when the account has a phone) and by
    Web Push (when the user subscribed a browser).
    `key` names the event for that user (e.g. `joined:<participant id>`): each key is told
    once per channel, however often it is sent."""

    user_id: uuid.UUID
    key: EventKey
    subject: Subject
    text: Message


class UserNotificationsCreate(WireModel):
    items: Batch(UserNotification, MAX_USER_NOTIFICATIONS_PER_CALL, distinct="key")


class UserNotificationsOut(WireModel):
    created: int = Field(description="Notifications stored now, one per item and channel.")
    already_sent: int = Field(
        description="Notifications skipped: their key was told on that channel before."
    )
    unknown_users: int = Field(description="Items skipped: their userId names no user.")


class NotificationOut(WireModel):
    id: uuid.UUID
    user_id: uuid.UUID | None
    key: str | None
    channel: Channel
    to: str | None
    subject: str | None
    text: str
    template: TemplateMessage | None
    status: NotificationStatus
    provider_message_id: str | None
    attempts: int
    last_error: str | None
    read_at: datetime | None
    created_at: datetime
    sent_at: datetime | None


def _b64url_bytes(value: str) -> bytes:
    if not re.fullmatch(r"[A-Za-z0-9_-]+=*", value):
        raise ValueError("must be base64url")
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


class PushKeys(WireModel):
    p256dh: Annotated[str, Field(max_length=100)] = Field(
        description="The browser's P-256 public key, base64url of the uncompressed point."
    )
    auth: Annotated[str, Field(max_length=50)] = Field(
        description="The browser's 16-byte authentication secret, base64url."
    )

    @field_validator("p256dh")
    @classmethod
    def _a_p256_point(cls, value: str) -> str:
        raw = _b64url_bytes(value)
        if len(raw) != 65 or raw[0] != 4:
            raise ValueError("p256dh must be an uncompressed P-256 point (65 bytes)")
        try:
            ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)
        except ValueError as exc:
            raise ValueError("p256dh is not a point on P-256") from exc
        return value

    @field_validator("auth")
    @classmethod
    def _sixteen_bytes(cls, value: str) -> str:
        if len(_b64url_bytes(value)) != 16:
            raise ValueError("auth must be 16 bytes")
        return value


class PushSubscriptionCreate(WireModel):
    """What the browser's `PushSubscription.toJSON()` gives."""

    endpoint: Annotated[str, Field(max_length=2048, pattern=r"^https?://[^\s/]+/\S*$")]
    expiration_time: Annotated[int, Field(ge=0, le=MAX_BIGINT)] | None = None
    keys: PushKeys


class PushSubscriptionOut(WireModel):
    id: uuid.UUID
    endpoint: str
    created_at: datetime


class VapidPublicKeyOut(WireModel):
    public_key: str = Field(
        description="The `applicationServerKey` for `pushManager.subscribe()`, base64url."
    )
