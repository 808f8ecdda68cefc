import uuid
from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from laku.core.db import InsertedAt, TimestampMixin, UUIDPrimaryKey, one_of, service_registry
from laku.core.idempotency import idempotency_table
from laku.core.outbox import outbox_table
from laku.payment.rules import EscrowStatus, PaymentStatus, RefundReason


class Base(DeclarativeBase):
    registry = service_registry("payment")


idempotency_keys = idempotency_table(Base.metadata)
outbox = outbox_table(Base.metadata)


class Payment(UUIDPrimaryKey, TimestampMixin, Base):
    """One escrow payment, paid through one Xendit invoice whose `external_id` is the payment
    code. Money is in escrow (`escrow_status` other than none) exactly when it was received."""

    __tablename__ = "payments"
    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("currency = 'IDR'", name="currency_idr"),
        one_of("status", PaymentStatus),
        one_of("escrow_status", EscrowStatus),
        CheckConstraint(
            "(escrow_status = 'none') = (status IN ('pending', 'expired', 'failed'))",
            name="escrow_only_when_paid",
        ),
        CheckConstraint(
            "paid_at IS NOT NULL OR status NOT IN ('paid', 'refunded')", name="paid_has_paid_at"
        ),
        CheckConstraint(
            "expired_at IS NOT NULL OR status <> 'expired'", name="expired_has_expired_at"
        ),
        # Only a payment still being created, or whose creation failed, lacks its invoice.
        CheckConstraint(
            "xendit_invoice_id IS NOT NULL OR status IN ('pending', 'failed')",
            name="invoice_once_past_creation",
        ),
        CheckConstraint(
            "(xendit_invoice_id IS NULL) = (invoice_url IS NULL)", name="invoice_id_with_url"
        ),
        CheckConstraint(
            "refunded_amount >= 0 AND refunded_amount <= amount", name="refunded_within_amount"
        ),
        CheckConstraint(
            "refunded_amount = 0 OR status IN ('paid', 'refunded')", name="refunded_only_when_paid"
        ),
        # `refunded` means refunded in whole; a partial refund leaves the payment paid.
        CheckConstraint(
            "(status = 'refunded') = (refunded_amount = amount)", name="refunded_when_whole"
        ),
        CheckConstraint(
            "(escrow_status = 'refunded') = (status = 'refunded')", name="escrow_refunded_in_whole"
        ),
        # A released payment whose order is cancelled in whole is refunded, and keeps when
        # (and to which factory) it was released.
        CheckConstraint(
            "escrow_released_at IS NOT NULL OR escrow_status <> 'released'",
            name="released_has_released_at",
        ),
        CheckConstraint(
            "escrow_released_at IS NOT NULL OR released_to_factory_id IS NULL",
            name="released_to_when_released",
        ),
        CheckConstraint(
            "(released_to_factory_id IS NULL) = (group_session_id IS NULL)",
            name="released_with_group_session",
        ),
        # What escrow released to a factory in a period: its settlement.
        Index("ix_payments_released_to_factory", "released_to_factory_id", "escrow_released_at"),
    )

    payment_code: Mapped[str] = mapped_column(String(32), unique=True)
    reference: Mapped[str] = mapped_column(String(200), unique=True)
    user_id: Mapped[uuid.UUID] = mapped_column(index=True)
    amount: Mapped[int]
    currency: Mapped[str] = mapped_column(String(3), server_default="IDR")
    description: Mapped[str] = mapped_column(String(1000))
    # Kept so a creation that failed can be retried with the same invoice details.
    payer_email: Mapped[str | None] = mapped_column(String(320))
    status: Mapped[str] = mapped_column(String(16))
    escrow_status: Mapped[str] = mapped_column(String(16), server_default="none")
    xendit_invoice_id: Mapped[str | None] = mapped_column(String(100), unique=True)
    invoice_url: Mapped[str | None] = mapped_column(String(1000))
    expires_at: Mapped[datetime]
    paid_at: Mapped[datetime | None]
    expired_at: Mapped[datetime | None]
    last_webhook_at: Mapped[datetime | None]
    # What refunds have given back so far; what escrow releases is the rest.
    refunded_amount: Mapped[int] = mapped_column(server_default="0")
    # When the escrow went to the factory's side: settlements are made per period of release.
    escrow_released_at: Mapped[datetime | None]
    # The factory and group buy the escrow was released for (payments released before these
    # were recorded have neither).
    released_to_factory_id: Mapped[uuid.UUID | None]
    group_session_id: Mapped[uuid.UUID | None]


class Refund(UUIDPrimaryKey, Base):
    """Money given back from a payment's escrow into the buyer's wallet (a whole refund when a
    group fails or is cancelled, a partial one for the difference to the final tier price).
    `pending` until the wallet has credited it, then `succeeded`."""

    __tablename__ = "refunds"
    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        # `failed` as well: the schema allows it, though no refund is ever set to it.
        one_of("status", ("pending", "succeeded", "failed")),
        one_of("reason", RefundReason),
    )

    payment_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("payments.id"), index=True)
    # The caller's key for what is refunded ("session:<id>:participant:<id>"): one refund each.
    reference: Mapped[str] = mapped_column(String(200), unique=True)
    amount: Mapped[int]
    reason: Mapped[str] = mapped_column(String(500))
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[InsertedAt]


class VoidedReference(Base):
    """A reference whose payment its caller gave up on before (or while) it was made: a
    creation arriving later is refused, so no invoice is handed out for a join that failed."""

    __tablename__ = "voided_references"

    reference: Mapped[str] = mapped_column(String(200), primary_key=True)
    created_at: Mapped[InsertedAt]
