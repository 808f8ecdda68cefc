import uuid

from sqlalchemy import Boolean, CheckConstraint, Index, String, false, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from laku.core.db import TimestampMixin, UUIDPrimaryKey, service_registry
from laku.core.idempotency import idempotency_table


class Base(DeclarativeBase):
    registry = service_registry("address")


idempotency_keys = idempotency_table(Base.metadata)


class Address(UUIDPrimaryKey, TimestampMixin, Base):
    """A buyer's shipping address; each buyer with addresses has exactly one default."""

    __tablename__ = "addresses"
    __table_args__ = (
        CheckConstraint("postal_code ~ '^[0-9]{5}$'", name="postal_code_5_digits"),
        # The database itself refuses a second default, whatever the application does.
        Index(
            "uq_addresses_one_default_per_user",
            "user_id",
            unique=True,
            postgresql_where=text("is_default"),
        ),
        Index("ix_addresses_user_id_created_at", "user_id", "created_at"),
    )

    # No foreign key: users live in auth-service; the id comes from a verified token.
    user_id: Mapped[uuid.UUID]
    label: Mapped[str] = mapped_column(String(50))
    recipient_name: Mapped[str] = mapped_column(String(200))
    phone: Mapped[str] = mapped_column(String(16))
    street: Mapped[str] = mapped_column(String(500))
    city: Mapped[str] = mapped_column(String(100))
    province: Mapped[str] = mapped_column(String(100))
    postal_code: Mapped[str] = mapped_column(String(5))
    notes: Mapped[str | None] = mapped_column(String(500))
    is_default: Mapped[bool] = mapped_column(Boolean, server_default=false())
