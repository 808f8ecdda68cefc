"""Buyers' address books: who may see which address, and the one-default-per-buyer rule."""

import hashlib
import uuid
from collections.abc import Sequence

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from laku.address.models import Address
from laku.address.schemas import AddressCreate, AddressUpdate
from laku.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from laku.core.rows import found
from laku.core.security import Principal, Role

# Far above what a buyer needs, and it keeps an unpaginated list small.
MAX_ADDRESSES_PER_USER = 50


def _address_not_found() -> NotFound:
    return NotFound("No such address", code="address_not_found")


def owner_scope(principal: Principal) -> uuid.UUID | None:
    """Whose addresses the caller may read by id: its own, or (admin, service) anyone's."""
    return None if principal.is_privileged else principal.user_id


def user_to_read(principal: Principal, requested: uuid.UUID | None) -> uuid.UUID:
    """Whose address book a listing shows: the caller's, or the `userId` an admin or service
    asks for. A buyer may name only itself."""
    if requested is None:
        if principal.role is Role.SERVICE:
            raise InvalidInput("userId is required for a service", code="user_id_required")
        return principal.user_id
    if not principal.is_privileged and requested != principal.user_id:
        raise Forbidden("userId must be the caller's own", code="user_mismatch")
    return requested


async def _lock_address_book(session: AsyncSession, user_id: uuid.UUID) -> None:
    """Serialise every change to one user's addresses until the transaction ends.

    An advisory lock rather than `SELECT ... FOR UPDATE` on the rows: a buyer's first address
    has no row to lock yet, and two concurrent first inserts must not both become the default.
    """
    digest = hashlib.blake2b(b"address-book:" + user_id.bytes, digest_size=8).digest()
    await session.execute(
        select(func.pg_advisory_xact_lock(int.from_bytes(digest, "big", signed=True)))
    )


async def _clear_default(session: AsyncSession, user_id: uuid.UUID) -> None:
    # Runs before the new default is written: the partial unique index is checked per statement.
    await session.execute(
        update(Address)
        .where(Address.user_id == user_id, Address.is_default)
        .values(is_default=False)
        .execution_options(synchronize_session=False)
    )


async def _owned_locked(session: AsyncSession, address_id: uuid.UUID, owner: uuid.UUID) -> Address:
    """The owner's address, with the owner's address book locked; another user's is not found."""
    await _lock_address_book(session, owner)
    return found(
        await session.scalar(
            select(Address).where(Address.id == address_id, Address.user_id == owner)
        ),
        _address_not_found(),
    )


async def _commit(session: AsyncSession, address: Address) -> Address:
    await session.commit()
    await session.refresh(address)  # server-set columns (updated_at) as stored
    return address


async def list_addresses(session: AsyncSession, user_id: uuid.UUID) -> Sequence[Address]:
    """The default first, then the newest."""
    result = await session.scalars(
        select(Address)
        .where(Address.user_id == user_id)
        .order_by(Address.is_default.desc(), Address.created_at.desc(), Address.id)
    )
    return result.all()


async def get_address(
    session: AsyncSession, address_id: uuid.UUID, *, owner: uuid.UUID | None
) -> Address:
    """`owner=None` reads any user's address; otherwise another user's is not found."""
    query = select(Address).where(Address.id == address_id)
    if owner is not None:
        query = query.where(Address.user_id == owner)
    return found(await session.scalar(query), _address_not_found())


async def get_default_address(session: AsyncSession, user_id: uuid.UUID) -> Address:
    return found(
        await session.scalar(select(Address).where(Address.user_id == user_id, Address.is_default)),
        NotFound("This user has no default address", code="no_default_address"),
    )


async def create_address(
    session: AsyncSession, owner: uuid.UUID, request: AddressCreate
) -> Address:
    if request.user_id is not None and request.user_id != owner:
        raise Forbidden("userId must be the caller's own", code="user_mismatch")
    await _lock_address_book(session, owner)
    existing = await session.scalar(select(func.count()).where(Address.user_id == owner))
    if existing >= MAX_ADDRESSES_PER_USER:
        raise Conflict(
            f"At most {MAX_ADDRESSES_PER_USER} addresses per user", code="address_limit_reached"
        )
    becomes_default = request.is_default or existing == 0  # the first address is the default
    if becomes_default:
        await _clear_default(session, owner)
    address = Address(
        user_id=owner,
        **request.model_dump(by_alias=False, exclude={"user_id", "is_default"}),
        is_default=becomes_default,
    )
    session.add(address)
    return await _commit(session, address)


async def update_address(
    session: AsyncSession, address_id: uuid.UUID, owner: uuid.UUID, request: AddressUpdate
) -> Address:
    address = await _owned_locked(session, address_id, owner)
    changes = request.model_dump(by_alias=False, exclude_unset=True, exclude={"is_default"})
    if request.is_default is False and address.is_default:
        raise Conflict(
            "A user with addresses always has a default; make another address the default",
            code="default_address_required",
        )
    if request.is_default and not address.is_default:
        await _clear_default(session, owner)
        address.is_default = True
    for field, value in changes.items():
        setattr(address, field, value)
    return await _commit(session, address)


async def set_default_address(
    session: AsyncSession, address_id: uuid.UUID, owner: uuid.UUID
) -> Address:
    address = await _owned_locked(session, address_id, owner)
    if not address.is_default:
        await _clear_default(session, owner)
        address.is_default = True
    return await _commit(session, address)


async def delete_address(session: AsyncSession, address_id: uuid.UUID, owner: uuid.UUID) -> None:
    """Deleting the default makes the most recently created remaining address the default."""
    address = await _owned_locked(session, address_id, owner)
    await session.delete(address)
    if address.is_default:
        await session.flush()
        successor = await session.scalar(
            select(Address)
            .where(Address.user_id == owner)
            .order_by(Address.created_at.desc(), Address.id.desc())
            .limit(1)
        )
        if successor is not None:
            successor.is_default = True
    await session.commit()
