"""settlement-service's statuses and pure rules: a settlement's figures, the ledger's
accounts, and who sees a factory's settlements."""

import uuid
from dataclasses import dataclass
from enum import StrEnum

from laku.core.money import apply_rate
from laku.core.security import Principal, Role

ESCROW_RELEASED = "escrow_released"
PLATFORM_FEE_REVENUE = "platform_fee_revenue"
CASH_XENDIT = "cash_xendit"


def factory_payable(factory_id: uuid.UUID) -> str:
    return f"factory_payable:{factory_id}"


def factory_receivable(factory_id: uuid.UUID) -> str:
    return f"factory_receivable:{factory_id}"


class SettlementStatus(StrEnum):
    PENDING = "pending"  # the payout is requested or on its way
    PAID = "paid"
    PAYOUT_FAILED = "payout_failed"  # the money stays owed (the factory's payable account)


class LedgerEntryKind(StrEnum):
    # escrow released = the factory's net + the platform's fee + the receivable it nets out
    SETTLEMENT = "settlement"
    SETTLEMENT_PAYOUT = "settlement_payout"  # the factory's net paid out through Xendit
    # a refund of escrow the factory was settled for: the factory owes it back
    FACTORY_RECEIVABLE = "factory_receivable"
    # A warehouse invoice paid: goods and inbound shipping into inventory, PPN as input tax.
    WAREHOUSE_INVOICE_PAID = "warehouse_invoice_paid"


class EscrowRefundStatus(StrEnum):
    PENDING = "pending"  # its release's period is not settled yet
    NETTED = "netted"  # the period's settlement was computed after it: left out of its total
    RECEIVABLE = "receivable"  # the factory was settled for it and owes it back


def sees_factory(principal: Principal, factory_id: uuid.UUID) -> bool:
    """Admins and services see every factory's settlements; a factory account its own."""
    return principal.is_privileged or (
        principal.role is Role.FACTORY
        and principal.factory_id is not None
        and principal.factory_id == factory_id
    )


@dataclass(frozen=True)
class Figures:
    total_amount: int
    platform_fee: int
    receivable_deducted: int
    receivable_carried: int
    net_amount: int
    fee_bps: int


def figures(total_amount: int, fee_bps: int, receivable: int = 0) -> Figures:
    """The fee rounded half up to the rupiah (5,000,000 at 500 bps: 250,000, net 4,750,000),
    then as much of what the factory owes back (`receivable`) as the rest covers."""
    fee = apply_rate(total_amount, fee_bps)
    deducted = min(receivable, total_amount - fee)
    return Figures(
        total_amount,
        fee,
        deducted,
        receivable - deducted,
        total_amount - fee - deducted,
        fee_bps,
    )
