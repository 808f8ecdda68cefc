import uuid

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from laku.core.db import TimestampMixin, UUIDPrimaryKey, one_of, service_registry
from laku.core.idempotency import idempotency_table
from laku.product.rules import ProductStatus


class Base(DeclarativeBase):
    registry = service_registry("product")


idempotency_keys = idempotency_table(Base.metadata)


class Category(UUIDPrimaryKey, TimestampMixin, Base):
    __tablename__ = "categories"
    __table_args__ = (
        CheckConstraint("slug ~ '^[a-z0-9]+(-[a-z0-9]+)*$'", name="slug_format"),
        CheckConstraint("parent_id IS NULL OR parent_id <> id", name="not_own_parent"),
    )

    name: Mapped[str] = mapped_column(String(200))
    slug: Mapped[str] = mapped_column(String(200), unique=True)
    parent_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("categories.id", ondelete="RESTRICT"), index=True
    )


class Product(UUIDPrimaryKey, TimestampMixin, Base):
    __tablename__ = "products"
    __table_args__ = (
        CheckConstraint("base_price >= 0", name="base_price_non_negative"),
        CheckConstraint("cost_price >= 0", name="cost_price_non_negative"),
        CheckConstraint("cost_price <= base_price", name="cost_not_above_price"),
        CheckConstraint("moq > 0", name="moq_positive"),
        CheckConstraint("group_duration_hours > 0", name="group_duration_positive"),
        one_of("status", ProductStatus),
        Index("ix_products_status_created_at", "status", "created_at"),
    )

    # No foreign key: factories live in factory-service; checked over HTTP when a product is made.
    factory_id: Mapped[uuid.UUID] = mapped_column(index=True)
    category_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("categories.id", ondelete="RESTRICT"), index=True
    )
    sku: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None]
    base_price: Mapped[int]
    cost_price: Mapped[int]
    moq: Mapped[int] = mapped_column(Integer)
    group_duration_hours: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default=ProductStatus.DRAFT.value)

    # Read-only views, loaded only when asked for (selectinload); rows are written by product_id.
    variants: Mapped[list["ProductVariant"]] = relationship(
        order_by=lambda: (ProductVariant.price_adjustment, ProductVariant.variant_name),
        lazy="raise",
        viewonly=True,
    )
    images: Mapped[list["ProductImage"]] = relationship(
        order_by=lambda: (ProductImage.sort_order, ProductImage.created_at, ProductImage.id),
        lazy="raise",
        viewonly=True,
    )


class ProductVariant(UUIDPrimaryKey, TimestampMixin, Base):
    """A sellable variant; its price is the product's price plus `price_adjustment`, which
    may be negative but never below zero in total (checked by the service, which locks the
    product row, since a CHECK cannot see the product's price)."""

    __tablename__ = "product_variants"
    __table_args__ = (UniqueConstraint("product_id", "variant_name"),)

    product_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("products.id", ondelete="CASCADE"))
    sku: Mapped[str] = mapped_column(String(64), unique=True)
    variant_name: Mapped[str] = mapped_column(String(100))
    price_adjustment: Mapped[int] = mapped_column(default=0)


class ProductImage(UUIDPrimaryKey, TimestampMixin, Base):
    __tablename__ = "product_images"
    __table_args__ = (CheckConstraint("sort_order >= 0", name="sort_order_non_negative"),)

    product_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("products.id", ondelete="CASCADE"), index=True
    )
    url: Mapped[str] = mapped_column(String(2048))
    sort_order: Mapped[int] = mapped_column(Integer, default=0)
