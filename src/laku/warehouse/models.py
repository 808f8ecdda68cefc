import uuid
from datetime import date, datetime

from sqlalchemy import (
    CheckConstraint,
    Computed,
    ForeignKey,
    Identity,
    Index,
    Integer,
    Sequence,
    String,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from laku.core.db import InsertedAt, TimestampMixin, UUIDPrimaryKey, one_of, service_registry
from laku.core.idempotency import idempotency_table
from laku.core.outbox import outbox_table
from laku.warehouse.rules import WarehouseInvoiceStatus


class Base(DeclarativeBase):
    registry = service_registry("warehouse")


idempotency_keys = idempotency_table(Base.metadata)
outbox = outbox_table(Base.metadata)
purchase_order_number = Sequence("purchase_order_number_seq", metadata=Base.metadata)
warehouse_invoice_number = Sequence("warehouse_invoice_number_seq", metadata=Base.metadata)


class Inventory(UUIDPrimaryKey, TimestampMixin, Base):
    """Stock of one variant. `quantity` is on hand, `reserved_quantity` promised to buyers;
    both always equal the sums of the variant's stock movements. Available stock falls below
    zero when counted stock is lost after it was promised: a shortage that bundles cover."""

    __tablename__ = "warehouse_inventory"
    __table_args__ = (
        CheckConstraint("quantity >= 0", name="quantity_not_negative"),
        CheckConstraint("reserved_quantity >= 0", name="reserved_not_negative"),
        CheckConstraint("max_stock_level > 0", name="max_stock_positive"),
        CheckConstraint(
            "reorder_threshold >= 0 AND reorder_threshold < max_stock_level",
            name="threshold_below_max",
        ),
        CheckConstraint("surplus_quantity >= 0", name="surplus_not_negative"),
    )

    product_id: Mapped[uuid.UUID] = mapped_column(index=True)
    variant_id: Mapped[uuid.UUID] = mapped_column(unique=True)
    factory_id: Mapped[uuid.UUID]
    quantity: Mapped[int]
    reserved_quantity: Mapped[int] = mapped_column(default=0)
    available_quantity: Mapped[int] = mapped_column(
        Computed("quantity - reserved_quantity", persisted=True)
    )
    max_stock_level: Mapped[int]
    reorder_threshold: Mapped[int]
    # Units received beyond the cap: held aside, not sellable, never silently dropped.
    surplus_quantity: Mapped[int] = mapped_column(default=0)


class StockMovement(Base):
    """The stock ledger: every change to on-hand or reserved stock is one row."""

    __tablename__ = "stock_movements"

    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    variant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("warehouse_inventory.variant_id"), index=True
    )
    kind: Mapped[str] = mapped_column(String(16))
    quantity_delta: Mapped[int]
    reserved_delta: Mapped[int]
    reference: Mapped[str | None] = mapped_column(String(200))
    reason: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[InsertedAt]


class Reservation(UUIDPrimaryKey, TimestampMixin, Base):
    """Stock promised under a caller's reference (e.g. a participant); the reference makes
    reserve, release and deduct idempotent.

    A reservation is a hold: unless confirmed (its join paid), it lapses at `expires_at` and
    the sweeper releases it. Releasing a reference never reserved leaves a `void` row (no
    variant, no units), so a reserve arriving after its own undo is refused."""

    __tablename__ = "reservations"
    __table_args__ = (
        CheckConstraint(
            "(status = 'void') = (variant_id IS NULL) AND (quantity > 0 OR status = 'void')",
            name="quantity_positive_unless_void",
        ),
        CheckConstraint(
            "confirmed_at IS NULL OR expires_at IS NULL", name="confirmed_never_lapses"
        ),
        # The sweeper's scan: unconfirmed holds by when they lapse.
        Index(
            "ix_reservations_lapsing",
            "expires_at",
            postgresql_where=text("status = 'reserved' AND expires_at IS NOT NULL"),
        ),
    )

    reference: Mapped[str] = mapped_column(String(200), unique=True)
    # The reservations of one group buy ("session:<id>") are released or fulfilled together.
    group_reference: Mapped[str | None] = mapped_column(String(200), index=True)
    variant_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("warehouse_inventory.variant_id")
    )
    quantity: Mapped[int]
    status: Mapped[str] = mapped_column(String(16))  # reserved | released | deducted | void
    expires_at: Mapped[datetime | None]
    confirmed_at: Mapped[datetime | None]


class PurchaseOrder(UUIDPrimaryKey, TimestampMixin, Base):
    __tablename__ = "warehouse_purchase_orders"
    __table_args__ = (
        # At most one automatic reorder in flight per product.
        Index(
            "uq_open_auto_reorder_per_product",
            "product_id",
            unique=True,
            postgresql_where=text("status IN ('open', 'shipped') AND reason = 'auto_reorder'"),
        ),
        CheckConstraint("bundles > 0", name="bundles_positive"),
        CheckConstraint(
            "total_cost = goods_cost + shipping_cost", name="total_is_goods_plus_shipping"
        ),
    )

    number: Mapped[str] = mapped_column(String(32), unique=True)
    factory_id: Mapped[uuid.UUID] = mapped_column(index=True)
    product_id: Mapped[uuid.UUID] = mapped_column(index=True)
    reason: Mapped[str] = mapped_column(String(32))  # auto_reorder | group_shortage
    bundles: Mapped[int] = mapped_column(Integer)
    unit_cost: Mapped[int]
    goods_cost: Mapped[int]
    shipping_cost: Mapped[int]
    total_cost: Mapped[int]
    status: Mapped[str] = mapped_column(String(16))  # open | shipped | received | cancelled
    tracking_number: Mapped[str | None] = mapped_column(String(100))
    shipped_at: Mapped[datetime | None]
    received_at: Mapped[datetime | None]
    cancelled_at: Mapped[datetime | None]


class PurchaseOrderLine(Base):
    """Units of one variant on a purchase order: bundles x the variant's units per bundle."""

    __tablename__ = "warehouse_purchase_order_lines"
    __table_args__ = (CheckConstraint("quantity > 0", name="quantity_positive"),)

    purchase_order_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("warehouse_purchase_orders.id"), primary_key=True
    )
    variant_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    units_in_bundle: Mapped[int] = mapped_column(Integer)
    quantity: Mapped[int]


class Fulfilment(TimestampMixin, Base):
    """Taking a closed group buy's reservations out of stock: at once when the stock is on hand,
    else after the purchase order raised for the shortage is received."""

    __tablename__ = "fulfilments"

    group_reference: Mapped[str] = mapped_column(String(200), primary_key=True)
    product_id: Mapped[uuid.UUID]
    status: Mapped[str] = mapped_column(String(16))  # awaiting_stock | fulfilled
    purchase_order_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("warehouse_purchase_orders.id"), index=True
    )
    units: Mapped[int]
    fulfilled_at: Mapped[datetime | None]


class WarehouseInvoice(UUIDPrimaryKey, TimestampMixin, Base):
    """What the warehouse owes the factory for a received purchase order (the seed's
    `warehouse_invoices`): the goods at unit cost and the inbound shipping, plus PPN on both.
    One per purchase order; `pending` until an admin records its payment."""

    __tablename__ = "warehouse_invoices"
    __table_args__ = (
        one_of("status", WarehouseInvoiceStatus),
        CheckConstraint(
            "goods_amount >= 0 AND shipping_amount >= 0 AND tax_amount >= 0",
            name="amounts_not_negative",
        ),
        CheckConstraint(
            "total_amount = goods_amount + shipping_amount + tax_amount",
            name="total_is_goods_shipping_and_tax",
        ),
        CheckConstraint(
            "(status = 'paid') = (payment_reference IS NOT NULL AND paid_at IS NOT NULL)",
            name="paid_has_reference",
        ),
    )

    number: Mapped[str] = mapped_column(String(32), unique=True)
    purchase_order_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("warehouse_purchase_orders.id"), unique=True
    )
    # The group buy whose shortage the purchase order covered; none for an automatic reorder.
    group_session_id: Mapped[uuid.UUID | None]
    factory_id: Mapped[uuid.UUID] = mapped_column(index=True)
    units: Mapped[int]
    unit_cost: Mapped[int]
    goods_amount: Mapped[int]
    shipping_amount: Mapped[int]
    tax_rate_bps: Mapped[int] = mapped_column(Integer)
    tax_amount: Mapped[int]
    total_amount: Mapped[int]
    due_date: Mapped[date]
    status: Mapped[str] = mapped_column(String(16))
    payment_reference: Mapped[str | None] = mapped_column(String(100))
    paid_at: Mapped[datetime | None]
