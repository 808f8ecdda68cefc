import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from laku.core.db import TimestampMixin, UUIDPrimaryKey, service_registry
from laku.core.idempotency import idempotency_table
from laku.core.rate_limit import rate_limit_table


class Base(DeclarativeBase):
    registry = service_registry("auth")


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
    password_hash: Mapped[str]


class SigningKey(TimestampMixin, Base):
    """Ed25519 keys that sign tokens: the newest signs, the ones it replaced are still published
    (the JWKS) while tokens they signed may be alive. The private half is stored encrypted."""

    __tablename__ = "signing_keys"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    private_key_encrypted: Mapped[str]
    public_jwk: Mapped[dict[str, Any]]


class LoginSession(Base):
    """One login: its access tokens carry its id (`sid`), its refresh tokens form one family.
    Revoked (logout, a refresh token used twice), every token of it is refused."""

    __tablename__ = "sessions"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(index=True)
    created_at: Mapped[datetime]
    # Absolute end: no refresh past it, whatever its refresh tokens say.
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None] = mapped_column(index=True)


class RefreshToken(Base):
    """A refresh token, kept only as its SHA-256 (it is 256 random bits, so no slow hash is
    needed). Each is used once; a used one presented again revokes its session."""

    __tablename__ = "refresh_tokens"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    session_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("sessions.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
