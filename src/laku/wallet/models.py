import uuid
from datetime import datetime

from sqlalchemy import CheckConstraint, Index, String, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from laku.core.db import TimestampMixin, UUIDPrimaryKey, one_of, service_registry
from laku.core.idempotency import idempotency_table
from laku.core.outbox import outbox_table
from laku.wallet.rules import TransactionDirection, WithdrawalStatus


class Base(DeclarativeBase):
    registry = service_registry("wallet")


idempotency_keys = idempotency_table(Base.metadata)
# A withdrawal's payout request is written in the same transaction as its debit.
outbox = outbox_table(Base.metadata)


class UserWallet(TimestampMixin, Base):
    """A user's spendable rupiah. `balance` always equals the sum of the user's credits minus
    debits; every change locks this row and writes the transaction in the same transaction."""

    __tablename__ = "user_wallets"
    __table_args__ = (
        CheckConstraint("balance >= 0", name="balance_not_negative"),
        CheckConstraint("currency = 'IDR'", name="currency_idr"),
    )

    # No foreign key: users live in auth-service.
    user_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    balance: Mapped[int] = mapped_column(server_default="0")
    currency: Mapped[str] = mapped_column(String(3), server_default="IDR")


class WalletTransaction(UUIDPrimaryKey, Base):
    """One change to a balance, the wallet's ledger. The unique idempotency key makes a credit
    or debit happen once however often it is asked for."""

    __tablename__ = "wallet_transactions"
    __table_args__ = (
        one_of("direction", TransactionDirection),
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("balance_after >= 0", name="balance_after_not_negative"),
        # A user's statement, newest first.
        Index("ix_wallet_transactions_user_id_created_at", "user_id", "created_at"),
    )

    user_id: Mapped[uuid.UUID]
    direction: Mapped[str] = mapped_column(String(8))
    amount: Mapped[int]
    reason: Mapped[str] = mapped_column(String(32))
    reference: Mapped[str] = mapped_column(String(200))
    idempotency_key: Mapped[str] = mapped_column(String(255), unique=True)
    balance_after: Mapped[int]
    # clock_timestamp(), not now(): taken once the wallet row is locked, so one user's
    # transactions are ordered as they were applied even when their transactions began
    # in another order.
    created_at: Mapped[datetime] = mapped_column(server_default=func.clock_timestamp())


class WalletWithdrawal(UUIDPrimaryKey, TimestampMixin, Base):
    """Money leaving a wallet for a bank account through a Xendit payout. The debit is taken
    when the withdrawal is made; a payout that fails gives it back (a withdrawal_reversal)."""

    __tablename__ = "wallet_withdrawals"
    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        one_of("status", WithdrawalStatus),
        CheckConstraint("status <> 'failed' OR failure_code IS NOT NULL", name="failed_has_code"),
        Index("ix_wallet_withdrawals_user_id_created_at", "user_id", "created_at"),
    )

    user_id: Mapped[uuid.UUID]
    amount: Mapped[int]
    bank_code: Mapped[str] = mapped_column(String(32))
    account_number: Mapped[str] = mapped_column(String(32))
    account_holder_name: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(16))
    payout_id: Mapped[str | None] = mapped_column(String(100), unique=True)
    failure_code: Mapped[str | None] = mapped_column(String(64))
