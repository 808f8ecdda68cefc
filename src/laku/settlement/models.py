import uuid
from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Identity, Index, Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from laku.core.db import InsertedAt, TimestampMixin, UUIDPrimaryKey, one_of, service_registry
from laku.core.idempotency import idempotency_table
from laku.core.outbox import outbox_table
from laku.settlement.rules import EscrowRefundStatus, LedgerEntryKind, SettlementStatus


class Base(DeclarativeBase):
    registry = service_registry("settlement")


idempotency_keys = idempotency_table(Base.metadata)
# A settlement's payout is requested (and followed until it settles) through the outbox.
outbox = outbox_table(Base.metadata)


class BankAccount:
    """The bank account a payout goes to."""

    bank_code: Mapped[str] = mapped_column(String(20))
    account_number: Mapped[str] = mapped_column(String(20))
    account_holder_name: Mapped[str] = mapped_column(String(100))


class FactoryPayoutAccount(BankAccount, TimestampMixin, Base):
    """Where a factory's settlements are paid; set by an admin."""

    __tablename__ = "factory_payout_accounts"

    # No foreign key: factories live in factory-service.
    factory_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)


class FactorySettlement(BankAccount, UUIDPrimaryKey, TimestampMixin, Base):
    """What one factory is paid for the escrow released to it in [period_start, period_end):
    the total less the platform's fee and less what the factory owed for refunds made after
    it was settled (`receivable_deducted`; what the net could not cover is `receivable_carried`
    to the next settlement). `pending` until its payout settles: `paid`, or `payout_failed`
    (the money stays owed, on the factory's payable account) until an admin retries it, with
    a new payout (`payout_attempt` counts them). Its bank account is the payout account as it was
    when the settlement was made: where this one is paid."""

    __tablename__ = "factory_settlements"
    __table_args__ = (
        CheckConstraint("period_end > period_start", name="period_forward"),
        CheckConstraint("total_amount > 0", name="total_positive"),
        CheckConstraint("platform_fee >= 0 AND platform_fee <= total_amount", name="fee_in_total"),
        CheckConstraint(
            "net_amount = total_amount - platform_fee - receivable_deducted",
            name="net_is_total_less_fee_and_receivable",
        ),
        CheckConstraint("net_amount >= 0", name="net_not_negative"),
        CheckConstraint(
            "receivable_deducted >= 0 AND receivable_carried >= 0", name="receivable_not_negative"
        ),
        CheckConstraint("payout_attempt >= 1", name="payout_attempt_positive"),
        CheckConstraint("fee_bps >= 0 AND fee_bps <= 10000", name="fee_bps_in_range"),
        one_of("status", SettlementStatus),
        CheckConstraint("(status = 'paid') = (paid_at IS NOT NULL)", name="paid_has_paid_at"),
        CheckConstraint(
            "(status = 'payout_failed') = (payout_failure_code IS NOT NULL)",
            name="failed_has_failure_code",
        ),
        # A factory's settlements by period: the overlap check and its list.
        Index("ix_factory_settlements_factory_period", "factory_id", "period_start"),
    )

    factory_id: Mapped[uuid.UUID]
    period_start: Mapped[datetime]
    period_end: Mapped[datetime]
    total_amount: Mapped[int]
    platform_fee: Mapped[int]
    net_amount: Mapped[int]
    receivable_deducted: Mapped[int] = mapped_column(server_default="0")
    receivable_carried: Mapped[int] = mapped_column(server_default="0")
    fee_bps: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    payout_id: Mapped[str | None] = mapped_column(String(100), unique=True)
    payout_failure_code: Mapped[str | None] = mapped_column(String(100))
    paid_at: Mapped[datetime | None]
    payout_attempt: Mapped[int] = mapped_column(Integer, server_default="1")


class FailedPayout(BankAccount, Base):
    """A payout of a settlement that did not reach the factory, kept when the settlement's
    payout is tried again (with a new payout, so the failed one is never paid twice)."""

    __tablename__ = "settlement_failed_payouts"

    settlement_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("factory_settlements.id"), primary_key=True
    )
    attempt: Mapped[int] = mapped_column(Integer, primary_key=True)
    payout_id: Mapped[str | None] = mapped_column(String(100))
    failure_code: Mapped[str] = mapped_column(String(100))
    failed_at: Mapped[InsertedAt]


class EscrowRefund(TimestampMixin, Base):
    """A refund of a cancelled order's payment whose escrow was released to a factory, as
    settlement-service accounts for it: `netted` (the total of settlement `settlement_id` was
    computed after it, so it was left out), `receivable` (the factory was settled for the money,
    by `settlement_id`, and owes it back: a ledger entry `receivable:<refund_id>`) or `pending`
    (reported while its release's period is not settled: that settlement decides)."""

    __tablename__ = "escrow_refunds"
    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        one_of("status", EscrowRefundStatus),
        CheckConstraint(
            "(status = 'pending') = (settlement_id IS NULL)", name="decided_has_settlement"
        ),
        Index("ix_escrow_refunds_factory_released", "factory_id", "escrow_released_at"),
    )

    # Payment-service's refund id; no foreign key, refunds live there.
    refund_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    factory_id: Mapped[uuid.UUID]
    payment_id: Mapped[uuid.UUID]
    amount: Mapped[int]
    escrow_released_at: Mapped[datetime]
    status: Mapped[str] = mapped_column(String(16))
    settlement_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("factory_settlements.id"), index=True
    )


class SettlementSession(Base):
    """What one group buy contributed to a settlement (payment-service's figures then)."""

    __tablename__ = "settlement_sessions"
    __table_args__ = (
        CheckConstraint("amount >= 0", name="amount_not_negative"),
        CheckConstraint("payments > 0", name="payments_positive"),
    )

    settlement_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("factory_settlements.id"), primary_key=True
    )
    group_session_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    amount: Mapped[int]
    payments: Mapped[int] = mapped_column(Integer)


class LedgerEntry(UUIDPrimaryKey, Base):
    """One double-entry posting (`transaction_ledger`): its lines' debits equal their credits,
    which the database checks at commit. Entries are never changed or removed; a correction
    is an entry of its own. `reference` makes each posting happen once."""

    __tablename__ = "transaction_ledger"
    __table_args__ = (one_of("kind", LedgerEntryKind),)

    kind: Mapped[str] = mapped_column(String(32))
    reference: Mapped[str] = mapped_column(String(200), unique=True)
    settlement_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("factory_settlements.id"), index=True
    )
    created_at: Mapped[InsertedAt]


class LedgerLine(Base):
    """One side of an entry: a debit or a credit (exactly one of them positive) to an account."""

    __tablename__ = "transaction_ledger_lines"
    __table_args__ = (
        CheckConstraint("debit >= 0 AND credit >= 0", name="amounts_not_negative"),
        CheckConstraint("(debit > 0) <> (credit > 0)", name="debit_or_credit"),
    )

    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    entry_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("transaction_ledger.id"), index=True)
    account: Mapped[str] = mapped_column(String(100), index=True)
    debit: Mapped[int] = mapped_column(server_default="0")
    credit: Mapped[int] = mapped_column(server_default="0")
