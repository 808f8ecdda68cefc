"""payment's status enums and the rules that read them (no I/O)."""

import math
import secrets
from datetime import UTC, datetime, timedelta
from enum import StrEnum


class PaymentStatus(StrEnum):
    PENDING = "pending"
    PAID = "paid"
    EXPIRED = "expired"
    FAILED = "failed"
    REFUNDED = "refunded"


class EscrowStatus(StrEnum):
    """`held` from the moment the buyer pays until the group succeeds (released) or fails
    (refunded); `none` while nothing has been paid. A released payment whose order is then
    cancelled in whole becomes `refunded` too (it keeps when and to whom it was released)."""

    NONE = "none"
    HELD = "held"
    RELEASED = "released"
    REFUNDED = "refunded"


class RefundReason(StrEnum):
    TIER_REFUND = "tier_refund"  # the difference to the final tier price
    GROUP_FAILED = "group_failed"  # the group missed its MOQ: everything back
    GROUP_CANCELLED = "group_cancelled"  # an admin called the session off: everything back
    # The buyer's order was cancelled: its subtotal back, even after the escrow was released.
    ORDER_CANCELLED = "order_cancelled"
    # Paid for a join that failed, lapsed or was never recorded: everything back.
    JOIN_FAILED = "join_failed"


class RefundStatus(StrEnum):
    """`pending` until the wallet has credited the refund."""

    PENDING = "pending"
    SUCCEEDED = "succeeded"


# Xendit's invoice statuses that move a payment.
PAID_INVOICE_STATUSES = frozenset({"PAID", "SETTLED"})
EXPIRED_INVOICE_STATUS = "EXPIRED"
ACTED_ON_INVOICE_STATUSES = PAID_INVOICE_STATUSES | {EXPIRED_INVOICE_STATUS}

# Only participants' payments are group-buying's business.
REPORTED_REFERENCE_PREFIX = "participant:"
# A payment left pending without an invoice this long was abandoned half way through creation
# (its process died between writing it and recording the invoice); a retry may take it over.
# Far longer than a Xendit call may take, so a creation still running is never taken over.
ABANDONED_AFTER = timedelta(minutes=2)


def new_payment_code() -> str:
    return f"PAY-{secrets.token_hex(6).upper()}"


def invoice_duration_seconds(expires_at: datetime | None, default_seconds: int) -> int:
    if expires_at is None:
        return default_seconds
    return max(1, math.ceil((expires_at - datetime.now(UTC)).total_seconds()))


def escrow_held(status: str, escrow_status: str) -> bool:
    return status == PaymentStatus.PAID and escrow_status == EscrowStatus.HELD


def refundable(status: str, escrow_status: str, reasons: set[RefundReason]) -> bool:
    """Escrow held; a cancelled order's refund also once the escrow went to the factory (the
    group succeeded, then the order was called off), and only that: released escrow is
    otherwise the factory's."""
    if escrow_held(status, escrow_status):
        return True
    return (
        reasons == {RefundReason.ORDER_CANCELLED}
        and status == PaymentStatus.PAID
        and escrow_status == EscrowStatus.RELEASED
    )
