"""What the xendit-sandbox's invoice and payout APIs share: Xendit's refusals and its
timestamps."""

from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError


class XenditApiError(Exception):
    """Answered as Xendit answers a refusal: `{"error_code", "message"}` with the status."""

    def __init__(self, status: int, error_code: str, message: str, **extra: Any):
        super().__init__(message)
        self.status = status
        self.body = {"error_code": error_code, "message": message, **extra}


def xendit_time(moment: datetime) -> str:
    """Xendit's timestamps: UTC, milliseconds, `Z`."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def validation_error(exc: ValidationError) -> XenditApiError:
    errors = [
        {"path": ".".join(map(str, error["loc"])), "message": error["msg"]}
        for error in exc.errors()
    ]
    first = errors[0]
    return XenditApiError(
        400, "API_VALIDATION_ERROR", f"{first['path']}: {first['message']}", errors=errors
    )
