import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, Index, Sequence, String, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from laku.core.db import TimestampMixin, UUIDPrimaryKey, one_of, service_registry
from laku.core.idempotency import idempotency_table
from laku.core.outbox import outbox_table
from laku.order.rules import OrderStatus


class Base(DeclarativeBase):
    registry = service_registry("order")


idempotency_keys = idempotency_table(Base.metadata)
# A cancelled order's refund and buyers' notifications are written with the change causing them.
outbox = outbox_table(Base.metadata)
# Numbered by the database, so a bulk insert of thousands of rows numbers each in one statement.
# The sequence is declared on the metadata so it is created before the default that uses it.
order_number_seq = Sequence("order_number_seq", metadata=Base.metadata)
ORDER_NUMBER_DEFAULT = text(
    "'ORD-' || to_char(now() AT TIME ZONE 'UTC', 'YYYYMMDD') || '-' "
    "|| nextval('\"order\".order_number_seq')"
)


class Order(UUIDPrimaryKey, TimestampMixin, Base):
    """What a paid participant of a successful group buy receives. `participant_id` is unique:
    one order per participant, which makes creating a session's orders idempotent."""

    __tablename__ = "orders"
    __table_args__ = (
        one_of("status", OrderStatus),
        CheckConstraint("subtotal >= 0", name="subtotal_not_negative"),
        # Each step of the lifecycle leaves its mark, so a status always has its history.
        CheckConstraint(
            "(shipped_at IS NOT NULL) = (status IN ('shipped', 'delivered'))",
            name="shipped_has_shipped_at",
        ),
        CheckConstraint(
            "shipped_at IS NULL OR tracking_number IS NOT NULL", name="shipped_has_tracking"
        ),
        CheckConstraint(
            "(delivered_at IS NOT NULL) = (status = 'delivered')", name="delivered_has_delivered_at"
        ),
        CheckConstraint(
            "(cancelled_at IS NOT NULL) = (status IN ('cancelled', 'refunded'))",
            name="cancelled_has_cancelled_at",
        ),
        Index("ix_orders_user_id_created_at", "user_id", "created_at"),
        CheckConstraint(
            "(chosen_courier_company IS NULL) = (chosen_courier_type IS NULL)",
            name="chosen_courier_whole",
        ),
    )

    order_number: Mapped[str] = mapped_column(
        String(32), unique=True, server_default=ORDER_NUMBER_DEFAULT
    )
    group_session_id: Mapped[uuid.UUID] = mapped_column(index=True)
    participant_id: Mapped[uuid.UUID] = mapped_column(unique=True)
    user_id: Mapped[uuid.UUID]
    payment_id: Mapped[uuid.UUID]
    product_id: Mapped[uuid.UUID]
    product_snapshot: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(16))
    subtotal: Mapped[int]
    tracking_number: Mapped[str | None] = mapped_column(String(100))
    courier: Mapped[str | None] = mapped_column(String(100))
    shipped_at: Mapped[datetime | None]
    delivered_at: Mapped[datetime | None]
    cancelled_at: Mapped[datetime | None]
    cancel_reason: Mapped[str | None]
    # Set once the order's goods are in hand (warehouse reports it for the group buy): only
    # then may a courier be booked for it.
    ready_to_ship_at: Mapped[datetime | None]
    # The courier service the buyer chose for the parcel; none: the cheapest is booked.
    chosen_courier_company: Mapped[str | None] = mapped_column(String(32))
    chosen_courier_type: Mapped[str | None] = mapped_column(String(32))

    items: Mapped[list["OrderItem"]] = relationship(
        lazy="selectin", order_by="OrderItem.sku", viewonly=True
    )

    @property
    def courier_choice(self) -> dict[str, str] | None:
        if self.chosen_courier_company is None or self.chosen_courier_type is None:
            return None
        return {
            "courier_company": self.chosen_courier_company,
            "courier_type": self.chosen_courier_type,
        }


class OrderItem(UUIDPrimaryKey, Base):
    __tablename__ = "order_items"
    __table_args__ = (
        CheckConstraint("quantity > 0", name="quantity_positive"),
        CheckConstraint("unit_price >= 0", name="unit_price_not_negative"),
        CheckConstraint(
            "total_price = quantity * unit_price", name="total_is_quantity_times_price"
        ),
    )

    order_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("orders.id"), index=True)
    variant_id: Mapped[uuid.UUID]
    sku: Mapped[str] = mapped_column(String(64))
    # "<product name> (<variant name>)"
    name: Mapped[str] = mapped_column(String(320))
    quantity: Mapped[int]
    unit_price: Mapped[int]
    total_price: Mapped[int]
