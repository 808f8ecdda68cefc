import uuid
from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Identity, String, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from laku.core.db import InsertedAt, TimestampMixin, UUIDPrimaryKey, one_of, service_registry
from laku.core.idempotency import idempotency_table
from laku.core.outbox import outbox_table


class Base(DeclarativeBase):
    registry = service_registry("logistics")


idempotency_keys = idempotency_table(Base.metadata)
# Moving an order to shipped or delivered is written with the tracking event that causes it.
outbox = outbox_table(Base.metadata)

# `creating` while the Biteship order is being booked; then Biteship's own statuses.
SHIPMENT_STATUSES = (
    "creating",
    "confirmed",
    "scheduled",
    "allocated",
    "picking_up",
    "picked",
    "cancelled",
    "on_hold",
    "dropping_off",
    "return_in_transit",
    "returned",
    "rejected",
    "disposed",
    "courier_not_found",
    "delivered",
)


class Shipment(UUIDPrimaryKey, TimestampMixin, Base):
    """One order's shipment, booked as a Biteship order. `order_id` is unique: an order is
    shipped once, so booking it again (a retry, or two calls at once) books nothing twice.
    Orders of one group buy to one address travel as one parcel: their shipments share the
    Biteship order and waybill, and the first of them carries the parcel's price (the others
    0)."""

    __tablename__ = "shipments"
    __table_args__ = (
        one_of("status", SHIPMENT_STATUSES),
        CheckConstraint("price IS NULL OR price >= 0", name="price_not_negative"),
        # Only a shipment still being booked lacks its Biteship order and price.
        CheckConstraint(
            "(biteship_order_id IS NULL) = (status = 'creating')", name="booked_unless_creating"
        ),
        CheckConstraint("(price IS NULL) = (status = 'creating')", name="priced_unless_creating"),
    )

    order_id: Mapped[uuid.UUID] = mapped_column(unique=True)
    user_id: Mapped[uuid.UUID] = mapped_column(index=True)
    biteship_order_id: Mapped[str | None] = mapped_column(String(64), index=True)
    biteship_tracking_id: Mapped[str | None] = mapped_column(String(64))
    # The courier's waybill. A few couriers issue it after booking (Biteship's
    # `order.waybill_id` webhook), so it may be missing for a while.
    tracking_number: Mapped[str | None] = mapped_column(String(64), index=True)
    courier_company: Mapped[str] = mapped_column(String(32))
    courier_type: Mapped[str] = mapped_column(String(32))
    price: Mapped[int | None]
    status: Mapped[str] = mapped_column(String(32))
    # When the status was taken at Biteship: a webhook older than it does not move it back.
    status_at: Mapped[datetime]
    origin_postal_code: Mapped[str] = mapped_column(String(5))
    # Where the parcel goes, as the address was when the shipment was booked.
    destination_address_id: Mapped[uuid.UUID]
    destination_name: Mapped[str] = mapped_column(String(200))
    destination_phone: Mapped[str] = mapped_column(String(20))
    destination_address: Mapped[str] = mapped_column(String(1000))
    destination_postal_code: Mapped[str] = mapped_column(String(5))
    destination_note: Mapped[str | None] = mapped_column(String(500))
    # When order-service was (to be) told: each is asked for once, through the outbox.
    order_shipped_requested_at: Mapped[datetime | None]
    order_delivered_requested_at: Mapped[datetime | None]


class TrackingEvent(Base):
    """A status Biteship reported for a shipment. Biteship gives its webhooks no id, so an
    event is the shipment, the status and when it was taken: the same webhook delivered again
    is recorded once."""

    __tablename__ = "shipment_tracking_events"
    __table_args__ = (UniqueConstraint("shipment_id", "status", "occurred_at"),)

    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    shipment_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("shipments.id"))
    status: Mapped[str] = mapped_column(String(32))
    note: Mapped[str]
    occurred_at: Mapped[datetime]
    recorded_at: Mapped[InsertedAt]
