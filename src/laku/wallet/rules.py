"""wallet-service's statuses and rules: what a transaction moves and why, and where a
withdrawal stands."""

from enum import StrEnum

CURRENCY = "IDR"
# Xendit's smallest transfer to an Indonesian bank account.
MIN_WITHDRAWAL = 10_000


class TransactionDirection(StrEnum):
    CREDIT = "credit"
    DEBIT = "debit"


class TransactionReason(StrEnum):
    TIER_REFUND = "tier_refund"
    GROUP_FAILED_REFUND = "group_failed_refund"
    SESSION_CANCELLED_REFUND = "session_cancelled_refund"
    ORDER_CANCELLED_REFUND = "order_cancelled_refund"
    ADJUSTMENT = "adjustment"
    WITHDRAWAL = "withdrawal"
    WITHDRAWAL_REVERSAL = "withdrawal_reversal"


class MovementReason(StrEnum):
    """The reasons other services and admins may credit or debit for; withdrawals and their
    reversals are written only by the withdrawal flow."""

    TIER_REFUND = "tier_refund"
    GROUP_FAILED_REFUND = "group_failed_refund"
    SESSION_CANCELLED_REFUND = "session_cancelled_refund"
    ORDER_CANCELLED_REFUND = "order_cancelled_refund"
    ADJUSTMENT = "adjustment"


class WithdrawalStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class Bank(StrEnum):
    """Banks a wallet can be withdrawn to (each one a Xendit payout channel `ID_<code>`)."""

    BCA = "BCA"
    BNI = "BNI"
    BRI = "BRI"
    MANDIRI = "MANDIRI"
    PERMATA = "PERMATA"
    CIMB = "CIMB"
    BSI = "BSI"
    DANAMON = "DANAMON"
    BTN = "BTN"
