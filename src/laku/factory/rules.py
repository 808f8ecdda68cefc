"""A factory's verification statuses."""

from enum import StrEnum


class VerificationStatus(StrEnum):
    PENDING = "pending"
    VERIFIED = "verified"
    REJECTED = "rejected"
