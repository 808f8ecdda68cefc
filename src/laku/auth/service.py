"""Accounts, and password checks with login throttling."""

import asyncio
import hmac
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerifyMismatchError
from sqlalchemy import Row, delete, or_, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from laku.auth.models import LoginThrottle, User
from laku.auth.schemas import CreateUserRequest, RegisterRequest
from laku.core.db import Database
from laku.core.errors import Conflict, Forbidden, NotFound, TooManyRequests, Unauthorized
from laku.core.security import SERVICE_IDENTITIES, Role, service_credential
from laku.core.settings import Settings, get_settings


@cache
def _hasher() -> PasswordHasher:
    settings = get_settings()
    return PasswordHasher(
        time_cost=settings.password_hash_time_cost,
        memory_cost=settings.password_hash_memory_kib,
    )


@cache
def _dummy_hash() -> str:
    """Verified against when the e-mail is unknown, so both failures take the same time."""
    return _hasher().hash("laku-no-such-user")


async def _hash(password: str) -> str:
    # Argon2 is deliberately slow: keep it off the event loop, and hold no connection meanwhile.
    return await asyncio.to_thread(_hasher().hash, password)


def _now() -> datetime:
    return datetime.now(UTC)


async def create_user(
    session: AsyncSession, request: RegisterRequest | CreateUserRequest, role: Role
) -> User:
    password_hash = await _hash(request.password)
    email = request.email.lower()
    if await session.scalar(select(User.id).where(User.email == email)):
        raise Conflict("An account with this e-mail already exists", code="email_taken")
    user = User(
        email=email,
        name=request.name,
        phone=request.phone,
        role=role.value,
        factory_id=getattr(request, "factory_id", None),
        password_hash=password_hash,
    )
    session.add(user)
    await session.commit()
    return user


async def ensure_admin(session: AsyncSession, settings: Settings) -> None:
    """The first admin account comes from settings (LAKU_ADMIN_EMAIL / LAKU_ADMIN_PASSWORD)."""
    email = settings.admin_email.lower()
    await session.execute(
        insert(User)
        .values(
            id=uuid.uuid4(),
            email=email,
            name=settings.admin_name,
            role=Role.ADMIN.value,
            password_hash=await _hash(settings.admin_password.get_secret_value()),
        )
        .on_conflict_do_nothing(index_elements=[User.email])
    )
    await session.commit()


async def authenticate(
    session: AsyncSession, settings: Settings, email: str, password: str
) -> User:
    email = email.lower()
    now = _now()
    throttle = await session.get(LoginThrottle, email)
    if throttle and throttle.locked_until and throttle.locked_until > now:
        retry_after = int((throttle.locked_until - now).total_seconds()) + 1
        await session.rollback()
        raise TooManyRequests(
            "Too many failed logins; try again later", code="login_locked", retry_after=retry_after
        )
    user = await session.scalar(select(User).where(User.email == email))
    await session.commit()  # ends the read: no connection held while the password is checked
    # An unknown e-mail is checked against a dummy hash: both failures take the same time.
    matches = await _password_matches(user.password_hash if user else _dummy_hash(), password)
    if user is not None and matches:
        await session.execute(delete(LoginThrottle).where(LoginThrottle.email == email))
        await session.commit()
        return user
    await _record_failure(session, settings, email, now)
    raise Unauthorized("E-mail or password is wrong", code="invalid_credentials")


async def _password_matches(password_hash: str, password: str) -> bool:
    try:
        return await asyncio.to_thread(_hasher().verify, password_hash, password)
    except (VerifyMismatchError, InvalidHashError):
        return False


async def _record_failure(
    session: AsyncSession, settings: Settings, email: str, now: datetime
) -> None:
    """Count a failure under the address's row lock; enough in one window lock the address."""
    await session.execute(
        insert(LoginThrottle)
        .values(email=email, failures=0, window_started_at=now)
        .on_conflict_do_nothing()
    )
    throttle = await session.get(LoginThrottle, email, with_for_update=True, populate_existing=True)
    assert throttle is not None
    window = timedelta(seconds=settings.login_lockout_seconds)
    if now - throttle.window_started_at > window:
        throttle.failures, throttle.window_started_at, throttle.locked_until = 0, now, None
    throttle.failures += 1
    if throttle.failures >= settings.login_max_failures:
        throttle.locked_until = now + window
    await session.commit()


async def purge_stale_throttles(db: Database, settings: Settings) -> int:
    """Delete throttle rows that count for nothing any more: their window of failures and any
    lock it caused have both ended (the address's next failure would start afresh). Returns
    how many went."""
    now = _now()
    window = timedelta(seconds=settings.login_lockout_seconds)
    async with db.sessions.begin() as session:
        result = await session.execute(
            delete(LoginThrottle).where(
                LoginThrottle.window_started_at < now - window,
                or_(LoginThrottle.locked_until.is_(None), LoginThrottle.locked_until < now),
            )
        )
    return result.rowcount


async def get_user(session: AsyncSession, user_id: uuid.UUID) -> User:
    user = await session.get(User, user_id)
    if user is None:
        raise NotFound("No such user", code="user_not_found")
    return user


async def user_contacts(
    session: AsyncSession, user_ids: Sequence[uuid.UUID]
) -> Sequence[Row[tuple[uuid.UUID, str, str, str | None]]]:
    """The contacts of those of `user_ids` that are users; the others are left out."""
    rows = await session.execute(
        select(User.id, User.email, User.name, User.phone)
        .where(User.id.in_(set(user_ids)))
        .order_by(User.id)
    )
    return rows.all()


def check_may_hold_token(user: User) -> None:
    """A factory account acts only for its factory: without one it gets no token at all (its
    filters would have nothing to scope by)."""
    if user.role == Role.FACTORY.value and user.factory_id is None:
        raise Forbidden("This factory account is not bound to a factory", code="factory_not_bound")


def check_service_credential(settings: Settings, service_name: str, credential: str) -> None:
    """Only a known service, presenting the credential derived for its own name, is issued a
    token in that name: one service's credential cannot obtain another's identity."""
    expected = service_credential(settings.service_secret.get_secret_value(), service_name)
    known = service_name in SERVICE_IDENTITIES
    if not (hmac.compare_digest(credential.encode(), expected.encode()) and known):
        raise Forbidden("Wrong service credential", code="invalid_service_credential")
