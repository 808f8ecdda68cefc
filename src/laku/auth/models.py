import uuid
from datetime import datetime

from sqlalchemy import DateTime, Integer, String, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from laku.core.db import TimestampMixin, UUIDPrimaryKey, service_metadata
from laku.core.idempotency import idempotency_table


class Base(DeclarativeBase):
    metadata = service_metadata("auth")


idempotency_keys = idempotency_table(Base.metadata)


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


class LoginThrottle(Base):
    """Failed logins per e-mail address; too many in a window lock the address for a while."""

    __tablename__ = "login_throttle"

    email: Mapped[str] = mapped_column(String(320), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    window_started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    locked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
