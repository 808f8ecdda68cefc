import uuid

from sqlalchemy import CheckConstraint, Integer, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from laku.core.db import TimestampMixin, UUIDPrimaryKey, service_metadata
from laku.core.idempotency import idempotency_table


class Base(DeclarativeBase):
    metadata = service_metadata("group_buying")


idempotency_keys = idempotency_table(Base.metadata)


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
