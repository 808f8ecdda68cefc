import uuid

from sqlalchemy import String, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from laku.core.db import TimestampMixin, UUIDPrimaryKey, service_metadata
from laku.core.idempotency import idempotency_table
from laku.core.rate_limit import rate_limit_table


class Base(DeclarativeBase):
    metadata = service_metadata("auth")


idempotency_keys = idempotency_table(Base.metadata)
# Login and registration limits, failed logins among them (laku.core.rate_limit).
rate_limits = rate_limit_table(Base.metadata)


class User(UUIDPrimaryKey, TimestampMixin, Base):
    __tablename__ = "users"

    email: Mapped[str] = mapped_column(String(320), unique=True)  # stored lower-case
    name: Mapped[str] = mapped_column(String(200))
    phone: Mapped[str | None] = mapped_column(String(32))
    role: Mapped[str] = mapped_column(String(16))
    factory_id: Mapped[uuid.UUID | None]
    password_hash: Mapped[str] = mapped_column(Text)


class SigningKey(TimestampMixin, Base):
    """Ed25519 keys that sign access tokens; public halves are served as the JWKS."""

    __tablename__ = "signing_keys"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    private_pem: Mapped[str] = mapped_column(Text)
    public_jwk: Mapped[dict] = mapped_column(JSONB)
