import uuid
from datetime import datetime
from typing import Annotated

from pydantic import AwareDatetime, Field, model_validator

from laku.core.money import BasisPoints, Rupiah
from laku.core.schemas import Text, WireModel
from laku.payment.client import MAX_REFUNDS_PER_CALL
from laku.settlement.rules import EscrowRefundStatus, LedgerEntryKind, SettlementStatus
from laku.wallet.client import Bank


class WarehouseInvoicePaid(WireModel):
    """warehouse-service reports a warehouse invoice paid (service only)."""

    invoice_id: uuid.UUID
    invoice_number: Text(32)
    factory_id: uuid.UUID
    goods_amount: Rupiah = Field(description="Goods at unit cost plus inbound shipping.")
    tax_amount: Rupiah = Field(description="PPN on them.")
    total_amount: Rupiah
    payment_reference: Text(100)


class SettlementCreate(WireModel):
    """Seed step 10. The amounts are the server's to compute; sent, they must equal its own."""

    factory_id: uuid.UUID
    period_start: AwareDatetime = Field(description="Inclusive.")
    period_end: AwareDatetime = Field(
        description="Exclusive, and past: a period is settled once it has ended."
    )
    total_amount: Rupiah | None = None
    platform_fee: Rupiah | None = None
    net_amount: Rupiah | None = None

    @model_validator(mode="after")
    def _period_forward(self) -> "SettlementCreate":
        if self.period_end <= self.period_start:
            raise ValueError("periodEnd must be after periodStart")
        return self


class SettlementSessionOut(WireModel):
    group_session_id: uuid.UUID
    amount: Rupiah = Field(description="Released to the factory: paid less refunded.")
    payments: int


_RECEIVABLE_DEDUCTED = (
    "What the factory owed back for refunds (cancelled orders) of escrow it had been settled "
    "for, netted out of this settlement: at most the total less the fee."
)
_RECEIVABLE_CARRIED = "What the factory still owes back after it, left for its next settlement."


class SettlementPreviewOut(WireModel):
    factory_id: uuid.UUID
    period_start: datetime
    period_end: datetime
    total_amount: Rupiah = Field(description="Escrow released to the factory in the period.")
    platform_fee: Rupiah
    receivable_deducted: Rupiah = Field(description=_RECEIVABLE_DEDUCTED)
    receivable_carried: Rupiah = Field(description=_RECEIVABLE_CARRIED)
    net_amount: Rupiah = Field(
        description="What the factory is paid: total less the fee and the receivable deducted."
    )
    fee_bps: BasisPoints
    payments: int
    sessions: list[SettlementSessionOut]


class SettlementOut(WireModel):
    id: uuid.UUID
    factory_id: uuid.UUID
    period_start: datetime
    period_end: datetime
    total_amount: Rupiah
    platform_fee: Rupiah
    receivable_deducted: Rupiah = Field(description=_RECEIVABLE_DEDUCTED)
    receivable_carried: Rupiah = Field(description=_RECEIVABLE_CARRIED)
    net_amount: Rupiah
    fee_bps: BasisPoints
    status: SettlementStatus
    bank_code: str
    account_number: str
    account_holder_name: str
    payout_id: str | None = Field(description="Xendit's payout id, once requested.")
    payout_attempt: int = Field(description="1, plus one for each retry of a failed payout.")
    payout_failure_code: str | None
    paid_at: datetime | None
    created_at: datetime
    updated_at: datetime


class LedgerLineOut(WireModel):
    account: str
    debit: Rupiah
    credit: Rupiah


class LedgerEntryOut(WireModel):
    id: uuid.UUID
    kind: LedgerEntryKind
    reference: str
    created_at: datetime
    lines: list[LedgerLineOut]


class FailedPayoutOut(WireModel):
    attempt: int
    payout_id: str | None
    failure_code: str
    bank_code: str
    account_number: str
    account_holder_name: str
    failed_at: datetime


class SettlementDetailOut(SettlementOut):
    sessions: list[SettlementSessionOut]
    ledger_entries: list[LedgerEntryOut] = Field(description="Oldest first.")
    failed_payouts: list[FailedPayoutOut] = Field(
        description="Earlier payouts that did not reach the factory, by attempt."
    )


class EscrowRefundIn(WireModel):
    """A refund payment-service made from escrow it had released to a factory."""

    refund_id: uuid.UUID
    payment_id: uuid.UUID
    factory_id: uuid.UUID
    amount: Annotated[Rupiah, Field(gt=0)]
    escrow_released_at: AwareDatetime


class EscrowRefundsReport(WireModel):
    # payment-service reports the refunds of one refund call together.
    refunds: Annotated[list[EscrowRefundIn], Field(min_length=1, max_length=MAX_REFUNDS_PER_CALL)]


class EscrowRefundOut(WireModel):
    refund_id: uuid.UUID
    factory_id: uuid.UUID
    amount: Rupiah
    status: EscrowRefundStatus
    settlement_id: uuid.UUID | None = Field(
        description="Netted: the settlement that left it out; receivable: the one that had "
        "paid the factory for it."
    )


class EscrowRefundsOut(WireModel):
    refunds: list[EscrowRefundOut]


class AccountBalanceOut(WireModel):
    account: str
    debit: Rupiah = Field(description="Sum of the account's debits.")
    credit: Rupiah = Field(description="Sum of the account's credits.")


class LedgerBalancesOut(WireModel):
    accounts: list[AccountBalanceOut] = Field(description="By account name.")
    total_debit: Rupiah
    total_credit: Rupiah = Field(description="Always equal to totalDebit.")


class PayoutAccountIn(WireModel):
    bank_code: Bank
    account_number: Annotated[str, Field(pattern=r"^[0-9]{5,20}$", examples=["1234567890"])]
    account_holder_name: Text(100)


class PayoutAccountOut(WireModel):
    factory_id: uuid.UUID
    bank_code: str
    account_number: str
    account_holder_name: str
    updated_at: datetime


class AuditSettlementOut(WireModel):
    """A settlement as `laku audit` checks its total against the escrow released."""

    id: uuid.UUID
    factory_id: uuid.UUID
    period_start: datetime
    period_end: datetime
    total_amount: int
    receivable_amount: int = Field(
        description="Refunds of escrow it settled, made since: what the factory owes back."
    )
