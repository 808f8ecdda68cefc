import uuid
from datetime import datetime

from sqlalchemy import (
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    func,
    select,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, column_property, mapped_column

from laku.core.db import TimestampMixin, UUIDPrimaryKey, service_metadata
from laku.core.idempotency import idempotency_table


class Base(DeclarativeBase):
    metadata = service_metadata("factory")


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
    comment: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Factory(TimestampMixin, Base):
    __tablename__ = "factories"
    __table_args__ = (
        CheckConstraint(
            "verification_status IN ('pending', 'verified', 'rejected')",
            name="verification_status",
        ),
    )

    # Declared here rather than through UUIDPrimaryKey: the rating aggregates below refer to it.
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(200))
    owner_name: Mapped[str] = mapped_column(String(200))
    phone: Mapped[str] = mapped_column(String(32))  # WhatsApp number
    email: Mapped[str | None] = mapped_column(String(320))
    address: Mapped[str] = mapped_column(Text)
    city: Mapped[str | None] = mapped_column(String(100))
    postal_code: Mapped[str] = mapped_column(String(5))
    verification_status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    verification_reason: Mapped[str | None] = mapped_column(Text)
    verified_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

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
