import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    String,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from laku.core.db import TimestampMixin, UUIDPrimaryKey, service_metadata
from laku.core.idempotency import idempotency_table
from laku.core.outbox import outbox_table


class Base(DeclarativeBase):
    metadata = service_metadata("settlement")


idempotency_keys = idempotency_table(Base.metadata)
# A settlement's payout is requested (and followed until it settles) through the outbox.
outbox = outbox_table(Base.metadata)


class FactoryPayoutAccount(TimestampMixin, Base):
    """Where a factory's settlements are paid; set by an admin."""

    __tablename__ = "factory_payout_accounts"

    # No foreign key: factories live in factory-service.
    factory_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    bank_code: Mapped[str] = mapped_column(String(20))
    account_number: Mapped[str] = mapped_column(String(20))
    account_holder_name: Mapped[str] = mapped_column(String(100))


class FactorySettlement(UUIDPrimaryKey, TimestampMixin, Base):
    """What one factory is paid for the escrow released to it in [period_start, period_end):
    the total less the platform's fee. `pending` until its payout settles: `paid`, or
    `payout_failed` (the money stays owed, on the factory's payable account)."""

    __tablename__ = "factory_settlements"
    __table_args__ = (
        CheckConstraint("period_end > period_start", name="period_forward"),
        CheckConstraint("total_amount > 0", name="total_positive"),
        CheckConstraint("platform_fee >= 0 AND platform_fee <= total_amount", name="fee_in_total"),
        CheckConstraint("net_amount = total_amount - platform_fee", name="net_is_total_less_fee"),
        CheckConstraint("fee_bps >= 0 AND fee_bps <= 10000", name="fee_bps_in_range"),
        CheckConstraint("status IN ('pending', 'paid', 'payout_failed')", name="status_known"),
        CheckConstraint("(status = 'paid') = (paid_at IS NOT NULL)", name="paid_has_paid_at"),
        CheckConstraint(
            "(status = 'payout_failed') = (payout_failure_code IS NOT NULL)",
            name="failed_has_failure_code",
        ),
        # A factory's settlements by period: the overlap check and its list.
        Index("ix_factory_settlements_factory_period", "factory_id", "period_start"),
    )

    factory_id: Mapped[uuid.UUID]
    period_start: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    period_end: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    total_amount: Mapped[int] = mapped_column(BigInteger)
    platform_fee: Mapped[int] = mapped_column(BigInteger)
    net_amount: Mapped[int] = mapped_column(BigInteger)
    fee_bps: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    # The payout account as it was when the settlement was made: where this one is paid.
    bank_code: Mapped[str] = mapped_column(String(20))
    account_number: Mapped[str] = mapped_column(String(20))
    account_holder_name: Mapped[str] = mapped_column(String(100))
    payout_id: Mapped[str | None] = mapped_column(String(100), unique=True)
    payout_failure_code: Mapped[str | None] = mapped_column(String(100))
    paid_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


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
    amount: Mapped[int] = mapped_column(BigInteger)
    payments: Mapped[int] = mapped_column(Integer)


class LedgerEntry(UUIDPrimaryKey, Base):
    """One double-entry posting (`transaction_ledger`): its lines' debits equal their credits,
    which the database checks at commit. Entries are never changed or removed; a correction
    is an entry of its own. `reference` makes each posting happen once."""

    __tablename__ = "transaction_ledger"
    __table_args__ = (
        CheckConstraint(
            "kind IN ('settlement', 'settlement_payout', 'warehouse_invoice_paid')",
            name="kind_known",
        ),
    )

    kind: Mapped[str] = mapped_column(String(32))
    reference: Mapped[str] = mapped_column(String(200), unique=True)
    settlement_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("factory_settlements.id"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class LedgerLine(Base):
    """One side of an entry: a debit or a credit (exactly one of them positive) to an account."""

    __tablename__ = "transaction_ledger_lines"
    __table_args__ = (
        CheckConstraint("debit >= 0 AND credit >= 0", name="amounts_not_negative"),
        CheckConstraint("(debit > 0) <> (credit > 0)", name="debit_or_credit"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    entry_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("transaction_ledger.id"), index=True)
    account: Mapped[str] = mapped_column(String(100), index=True)
    debit: Mapped[int] = mapped_column(BigInteger, server_default="0")
    credit: Mapped[int] = mapped_column(BigInteger, server_default="0")
