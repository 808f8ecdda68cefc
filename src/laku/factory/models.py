import uuid
from datetime import datetime

from sqlalchemy import (
    CheckConstraint,
    Float,
    ForeignKey,
    SmallInteger,
    String,
    UniqueConstraint,
    func,
    select,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, column_property, mapped_column

from laku.core.db import InsertedAt, TimestampMixin, UUIDPrimaryKey, one_of, service_registry
from laku.core.idempotency import idempotency_table
from laku.factory.rules import VerificationStatus


class Base(DeclarativeBase):
    registry = service_registry("factory")


idempotency_keys = idempotency_table(Base.metadata)


class FactoryReview(UUIDPrimaryKey, Base):
    """A buyer's rating of a factory; one per buyer and factory."""

    __tablename__ = "factory_reviews"
    __table_args__ = (
        # Also the index behind the per-factory rating aggregates (factory_id leads).
        UniqueConstraint("factory_id", "user_id"),
        CheckConstraint("rating BETWEEN 1 AND 5", name="rating_range"),
    )

    factory_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("factory.factories.id"))
    user_id: Mapped[uuid.UUID]
    rating: Mapped[int] = mapped_column(SmallInteger)
    comment: Mapped[str | None]
    created_at: Mapped[InsertedAt]


class Factory(TimestampMixin, Base):
    __tablename__ = "factories"
    __table_args__ = (
        one_of("verification_status", VerificationStatus, name="verification_status"),
    )

    # Declared here rather than through UUIDPrimaryKey: the rating aggregates below refer to it.
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(200))
    owner_name: Mapped[str] = mapped_column(String(200))
    phone: Mapped[str] = mapped_column(String(32))  # WhatsApp number
    email: Mapped[str | None] = mapped_column(String(320))
    address: Mapped[str]
    city: Mapped[str | None] = mapped_column(String(100))
    postal_code: Mapped[str] = mapped_column(String(5))
    verification_status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    verification_reason: Mapped[str | None]
    verified_at: Mapped[datetime | None]

    # Computed with every load, so a factory read is never out of step with its reviews.
    average_rating: Mapped[float | None] = column_property(
        select(func.round(func.avg(FactoryReview.rating), 2).cast(Float))
        .where(FactoryReview.factory_id == id)
        .correlate_except(FactoryReview)
        .scalar_subquery()
    )
    review_count: Mapped[int] = column_property(
        select(func.count(FactoryReview.id))
        .where(FactoryReview.factory_id == id)
        .correlate_except(FactoryReview)
        .scalar_subquery()
    )
