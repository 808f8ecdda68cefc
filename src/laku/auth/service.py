"""Accounts, and password checks with login throttling."""

import asyncio
import hmac
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerifyMismatchError
from sqlalchemy import Row, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from laku.auth.models import User, rate_limits
from laku.auth.schemas import CreateUserRequest, RegisterRequest
from laku.core import rate_limit
from laku.core.errors import Conflict, Forbidden, NotFound, Unauthorized
from laku.core.rate_limit import Limit
from laku.core.rows import found
from laku.core.security import SERVICE_IDENTITIES, Role, service_credential
from laku.core.settings import Rate, Settings, get_settings


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


@dataclass(frozen=True)
class LoginLimits:
    attempts: Limit  # every login from the address, right or wrong
    pair: Limit  # failures on this account from this address
    address: Limit  # failures from this address on any account
    account: Limit  # failures on this account from anywhere: the ceiling on distributed guessing


def _login_limits(settings: Settings, email: str, address: str) -> LoginLimits:
    limits = settings.rate_limits
    return LoginLimits(
        attempts=Limit(f"login:address:{address}", limits.login_per_address),
        pair=Limit(
            f"login-failures:account-address:{email}|{address}",
            Rate(limit=settings.login_max_failures, seconds=settings.login_lockout_seconds),
            code="login_locked",
        ),
        address=Limit(
            f"login-failures:address:{address}", limits.login_failures_per_address, "login_locked"
        ),
        account=Limit(
            f"login-failures:account:{email}", limits.login_failures_per_account, "login_locked"
        ),
    )


async def authenticate(
    session: AsyncSession, settings: Settings, email: str, password: str, address: str
) -> User:
    """Every attempt first claims one failure of each kind, atomically and before the password
    is checked, so parallel guesses are verified no more often than the limits allow. A success
    gives its claim back: the (account, address) failures start afresh (only someone with the
    password can do that), and the address's and account's lose the one this attempt took."""
    email = email.lower()
    limits = _login_limits(settings, email, address)
    await rate_limit.claim(
        session, rate_limits, [limits.attempts, limits.pair, limits.address, limits.account]
    )
    user = await session.scalar(select(User).where(User.email == email))
    await session.commit()  # ends the read: no connection held while the password is checked
    # An unknown e-mail is checked against a dummy hash: both failures take the same time.
    matches = await _password_matches(user.password_hash if user else _dummy_hash(), password)
    if user is None or not matches:
        raise Unauthorized("E-mail or password is wrong", code="invalid_credentials")
    give_back = {
        limits.pair.key: rate_limit.forget,
        limits.address.key: rate_limit.refund,
        limits.account.key: rate_limit.refund,
    }
    # In the order claims lock keys: a give-back and a claim never wait on each other.
    for key in sorted(give_back):
        await give_back[key](session, rate_limits, key)
    await session.commit()
    return user


async def claim_registration(
    session: AsyncSession, settings: Settings, email: str, address: str
) -> None:
    """Registrations per client address, and per e-mail (an `email_taken` answer tells that
    an account exists, so asking about one address is limited too); refused with 429 before
    any password is hashed."""
    limits = settings.rate_limits
    await rate_limit.claim(
        session,
        rate_limits,
        [
            Limit(f"register:address:{address}", limits.register_per_address),
            Limit(f"register:email:{email.lower()}", limits.register_per_email),
        ],
    )


async def _password_matches(password_hash: str, password: str) -> bool:
    try:
        return await asyncio.to_thread(_hasher().verify, password_hash, password)
    except (VerifyMismatchError, InvalidHashError):
        return False


async def get_user(session: AsyncSession, user_id: uuid.UUID) -> User:
    return found(await session.get(User, user_id), NotFound("No such user", code="user_not_found"))


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
