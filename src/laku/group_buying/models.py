import uuid
from datetime import datetime

from sqlalchemy import (
    CheckConstraint,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from laku.core.db import TimestampMixin, UUIDPrimaryKey, one_of, service_registry
from laku.core.idempotency import idempotency_table
from laku.core.outbox import outbox_table
from laku.core.rate_limit import rate_limit_table
from laku.group_buying.rules import CancelReason, CloseStep, ParticipantStatus, SessionStatus


class Base(DeclarativeBase):
    registry = service_registry("group_buying")


idempotency_keys = idempotency_table(Base.metadata)
outbox = outbox_table(Base.metadata)
rate_limits = rate_limit_table(Base.metadata)  # joins per address and per buyer


class BundleComponent(UUIDPrimaryKey, TimestampMixin, Base):
    """One variant's share of a product's wholesale bundle: the seed's T-shirt bundle
    (4S + 4M + 4L) is three rows. A bundle carries every variant the product has a row for."""

    __tablename__ = "grosir_bundle_composition"
    __table_args__ = (
        # Leads with product_id, so it also serves reading a product's composition.
        UniqueConstraint("product_id", "variant_id"),
        CheckConstraint("units_in_bundle > 0", name="units_in_bundle_positive"),
    )

    # No foreign keys: products and variants live in product-service, checked over HTTP.
    product_id: Mapped[uuid.UUID]
    variant_id: Mapped[uuid.UUID]
    units_in_bundle: Mapped[int] = mapped_column(Integer)


class GroupBuyingSession(UUIDPrimaryKey, TimestampMixin, Base):
    """A group buy of one product (seed step 2). `paid_quantity` is the sum of its paid
    participants' quantities, changed only under this row's lock."""

    __tablename__ = "group_buying_sessions"
    __table_args__ = (
        CheckConstraint("target_moq > 0", name="target_moq_positive"),
        CheckConstraint("price_tier_100 > 0", name="tier_prices_positive"),
        CheckConstraint(
            "price_tier_25 >= price_tier_50 AND price_tier_50 >= price_tier_75 "
            "AND price_tier_75 >= price_tier_100",
            name="tier_prices_do_not_rise",
        ),
        CheckConstraint("group_price = price_tier_25", name="group_price_is_tier_25"),
        CheckConstraint("paid_quantity >= 0", name="paid_quantity_not_negative"),
        one_of("status", SessionStatus),
        one_of("close_step", CloseStep, nullable=True),
        # The public list: open sessions by end time; and the closer's: open ones past it.
        Index("ix_group_buying_sessions_status_end_time", "status", "end_time"),
    )

    session_code: Mapped[str] = mapped_column(String(16), unique=True)
    # No foreign keys: the product and factory live in product-service, checked over HTTP.
    product_id: Mapped[uuid.UUID] = mapped_column(index=True)
    factory_id: Mapped[uuid.UUID]
    product_name: Mapped[str] = mapped_column(String(200))
    target_moq: Mapped[int] = mapped_column(Integer)
    group_price: Mapped[int]
    price_tier_25: Mapped[int]
    price_tier_50: Mapped[int]
    price_tier_75: Mapped[int]
    price_tier_100: Mapped[int]
    end_time: Mapped[datetime]
    estimated_completion_date: Mapped[datetime]
    status: Mapped[str] = mapped_column(String(16))
    paid_quantity: Mapped[int] = mapped_column(Integer, default=0)
    created_by: Mapped[uuid.UUID]
    cancelled_at: Mapped[datetime | None]
    # The close (design 7): how far it has gone, and who holds it until when. A closer renews
    # its lease while it works; one that died leaves the session to the next closer after it.
    close_step: Mapped[str | None] = mapped_column(String(24))
    close_claimed_until: Mapped[datetime | None]
    close_claim_token: Mapped[uuid.UUID | None]


class SessionVariant(Base):
    """A variant of the session's product as it was when the session opened: its price
    adjustment is fixed for the session's life, and joins need no call to product-service."""

    __tablename__ = "group_buying_session_variants"

    session_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("group_buying_sessions.id", ondelete="CASCADE"), primary_key=True
    )
    variant_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    sku: Mapped[str] = mapped_column(String(64))
    variant_name: Mapped[str] = mapped_column(String(100))
    price_adjustment: Mapped[int]


class Participant(UUIDPrimaryKey, TimestampMixin, Base):
    """A buyer's join (seed step 3). Its stock is reserved in warehouse-service and its escrow
    payment made in payment-service, both under `reservation_reference` ("participant:<id>").
    A cancelled participant with `paid_at` set paid after it was cancelled: a refund is owed."""

    __tablename__ = "group_participants"
    __table_args__ = (
        ForeignKeyConstraint(
            ["session_id", "variant_id"],
            [SessionVariant.session_id, SessionVariant.variant_id],
        ),
        CheckConstraint("quantity > 0", name="quantity_positive"),
        CheckConstraint("unit_price > 0", name="unit_price_positive"),
        CheckConstraint("total_price = unit_price * quantity", name="total_is_unit_times_quantity"),
        # Tiers never rise, so the final tier never costs more than the one joined at.
        CheckConstraint(
            "final_unit_price IS NULL OR (final_unit_price > 0 AND final_unit_price <= unit_price)",
            name="final_price_within_paid",
        ),
        one_of("status", ParticipantStatus),
        # A session's participants (of a status) in the order they joined: a page of them is
        # a range of this index, not a sort of the whole session (a close reads 100,000).
        Index(
            "ix_group_participants_session_status_joined",
            "session_id",
            "status",
            "created_at",
            "id",
        ),
        # The sweeper's scan: unpaid joins by when their stock hold lapses.
        Index(
            "ix_group_participants_hold_lapsing",
            "hold_expires_at",
            postgresql_where=text("status = 'pending_payment' AND hold_expires_at IS NOT NULL"),
        ),
        Index("ix_group_participants_user_id_created_at", "user_id", "created_at"),
    )

    session_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("group_buying_sessions.id"))
    user_id: Mapped[uuid.UUID]
    variant_id: Mapped[uuid.UUID]
    quantity: Mapped[int] = mapped_column(Integer)
    unit_price: Mapped[int]
    total_price: Mapped[int]
    status: Mapped[str] = mapped_column(String(16))
    reservation_reference: Mapped[str] = mapped_column(String(200), unique=True)
    payment_id: Mapped[uuid.UUID | None] = mapped_column(unique=True)
    payment_url: Mapped[str | None] = mapped_column(String(2048))
    # The unit price at the session's final tier, set when it closes; the difference to
    # `unit_price` is refunded per unit.
    final_unit_price: Mapped[int | None]
    paid_at: Mapped[datetime | None]
    cancelled_at: Mapped[datetime | None]
    cancel_reason: Mapped[str | None] = mapped_column(String(32))
    # When its stock hold in warehouse-service lapses unless paid (its invoice expires a grace
    # period before); an unpaid join past it is cancelled by the sweeper.
    hold_expires_at: Mapped[datetime | None]

    def cancel(self, reason: CancelReason, at: datetime) -> None:
        self.status = ParticipantStatus.CANCELLED
        self.cancelled_at = at
        self.cancel_reason = reason
