"""A notification's channels and statuses, and the phone numbers WhatsApp reaches."""

import re
from enum import StrEnum


class Channel(StrEnum):
    WHATSAPP = "whatsapp"
    EMAIL = "email"
    IN_APP = "in_app"
    PUSH = "push"  # Web Push to every browser the user subscribed


class NotificationStatus(StrEnum):
    """`pending` until the provider accepted it (a failed attempt is retried, never dropped)."""

    PENDING = "pending"
    SENT = "sent"


# WhatsApp wants the number with its country code; we store E.164 ("+" and 8-15 digits).
# Phones elsewhere on the platform may be written without "+" or, being Indonesian, in the
# national form (0812...), which is +62 without the trunk 0.
_INTERNATIONAL_NUMBER = re.compile(r"\+?([1-9][0-9]{7,14})")
_INDONESIAN_NATIONAL_NUMBER = re.compile(r"0([1-9][0-9]{6,12})")
_INDONESIA_COUNTRY_CODE = "62"


def whatsapp_number(value: str | None) -> str:
    """The number in E.164; refuses what is not a phone number."""
    if value is not None:
        if national := _INDONESIAN_NATIONAL_NUMBER.fullmatch(value):
            return f"+{_INDONESIA_COUNTRY_CODE}{national[1]}"
        if international := _INTERNATIONAL_NUMBER.fullmatch(value):
            return f"+{international[1]}"
    raise ValueError(
        "whatsapp needs `to` as a phone number with its country code (+6281234567890) "
        "or in Indonesian national form (081234567890)"
    )
