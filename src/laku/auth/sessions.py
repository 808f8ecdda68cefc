"""Login sessions: refresh tokens that rotate, reuse detection, logout, the revocation feed.

A refresh token is used once: refreshing gives a new access token and a new refresh token of the
same session (its "family"). A used refresh token presented again means it was stolen (or the
client is broken): the whole session is revoked, as OWASP recommends. Revoked sessions are
published to every service (`GET /api/auth/revocations`), whose verifiers then refuse the
session's access tokens before they expire."""

import hashlib
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from laku.auth.models import LoginSession, RefreshToken, User
from laku.core.db import Database
from laku.core.errors import Unauthorized
from laku.core.settings import Settings


def _now() -> datetime:
    return datetime.now(UTC)


def _digest(refresh_token: str) -> str:
    return hashlib.sha256(refresh_token.encode()).hexdigest()


def _invalid() -> Unauthorized:
    return Unauthorized("The refresh token is not valid", code="invalid_refresh_token")


@dataclass(frozen=True)
class Renewal:
    """Who a session belongs to and its next refresh token."""

    user: User
    session_id: uuid.UUID
    refresh_token: str


async def _new_refresh_token(
    session: AsyncSession, settings: Settings, login: LoginSession, now: datetime
) -> str:
    token = secrets.token_urlsafe(32)
    session.add(
        RefreshToken(
            token_hash=_digest(token),
            session_id=login.id,
            created_at=now,
            expires_at=min(
                now + timedelta(seconds=settings.refresh_token_ttl_seconds), login.expires_at
            ),
        )
    )
    return token


async def start(session: AsyncSession, settings: Settings, user: User) -> Renewal:
    now = _now()
    login = LoginSession(
        id=uuid.uuid4(),
        user_id=user.id,
        created_at=now,
        expires_at=now + timedelta(seconds=settings.session_max_seconds),
    )
    session.add(login)
    await session.flush()
    token = await _new_refresh_token(session, settings, login, now)
    await session.commit()
    return Renewal(user, login.id, token)


async def refresh(session: AsyncSession, settings: Settings, refresh_token: str) -> Renewal:
    """Use up `refresh_token` and issue the next one of its session. A token used before
    revokes its session (and is refused)."""
    now = _now()
    stored = await session.get(RefreshToken, _digest(refresh_token), with_for_update=True)
    if stored is None:
        await session.rollback()
        raise _invalid()
    login = await session.get(LoginSession, stored.session_id, with_for_update=True)
    assert login is not None
    if login.revoked_at is not None:
        await session.rollback()
        raise Unauthorized("This session has ended; sign in again", code="session_revoked")
    if stored.used_at is not None:
        login.revoked_at = now
        await session.commit()
        raise Unauthorized(
            "This refresh token was already used; the session is ended, sign in again",
            code="refresh_token_reused",
        )
    if stored.expires_at <= now or login.expires_at <= now:
        await session.rollback()
        raise Unauthorized("The session has expired; sign in again", code="session_expired")
    user = await session.get(User, login.user_id)
    if user is None:
        await session.rollback()
        raise _invalid()
    stored.used_at = now
    token = await _new_refresh_token(session, settings, login, now)
    await session.commit()
    return Renewal(user, login.id, token)


async def revoke(session: AsyncSession, session_id: uuid.UUID) -> None:
    await session.execute(
        update(LoginSession)
        .where(LoginSession.id == session_id, LoginSession.revoked_at.is_(None))
        .values(revoked_at=func.clock_timestamp())
    )
    await session.commit()


async def session_of(session: AsyncSession, refresh_token: str) -> uuid.UUID | None:
    """The session a refresh token (used or not) belongs to."""
    return await session.scalar(
        select(RefreshToken.session_id).where(RefreshToken.token_hash == _digest(refresh_token))
    )


@dataclass(frozen=True)
class Revocation:
    session_id: uuid.UUID
    revoked_at: datetime
    tokens_valid_until: datetime


async def revocations(
    session: AsyncSession, settings: Settings, since: datetime | None
) -> tuple[datetime, Sequence[Revocation]]:
    """The sessions revoked at or after `since` whose access tokens may still be alive, and the
    time of the answer. A revocation older than an access token's lifetime is left out: every
    token of its session has expired anyway."""
    now = await session.scalar(select(func.clock_timestamp()))
    assert now is not None
    lifetime = timedelta(seconds=settings.access_token_ttl_seconds)
    oldest = now - lifetime
    if since is not None and since > oldest:
        oldest = since
    rows = await session.execute(
        select(LoginSession.id, LoginSession.revoked_at)
        .where(LoginSession.revoked_at >= oldest)
        .order_by(LoginSession.revoked_at)
    )
    await session.commit()
    return now, [Revocation(sid, at, at + lifetime) for sid, at in rows.all()]


async def purge_ended(db: Database, settings: Settings) -> int:
    """Delete sessions that can no longer matter: past their absolute end (or revoked) for
    longer than an access token lives. Their refresh tokens go with them."""
    cutoff = _now() - timedelta(seconds=settings.access_token_ttl_seconds)
    async with db.sessions.begin() as session:
        result = await session.execute(
            delete(LoginSession).where(
                (LoginSession.expires_at < cutoff) | (LoginSession.revoked_at < cutoff)
            )
        )
    return result.rowcount
