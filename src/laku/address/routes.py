import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, status

from laku.address import service
from laku.address.schemas import AddressCreate, AddressOut, AddressUpdate
from laku.core.app import DbSession
from laku.core.errors import PROBLEM_RESPONSES
from laku.core.routing import NO_CONTENT
from laku.core.security import BuyerPrincipal, Principal, Role, require_roles

router = APIRouter(prefix="/api/addresses", tags=["address"], responses=PROBLEM_RESPONSES)

# Only buyers keep address books; admins and logistics-service (destinations) read them.
Reader = Annotated[
    Principal, Depends(require_roles(Role.BUYER, Role.ADMIN, services=["logistics"]))
]
UserIdQuery = Annotated[
    uuid.UUID | None,
    Query(alias="userId", description="Whose addresses (admin and service only; default: caller)"),
]


@router.post("", response_model=AddressOut, status_code=status.HTTP_201_CREATED)
async def create_address(body: AddressCreate, principal: BuyerPrincipal, session: DbSession):
    return await service.create_address(session, principal.user_id, body)


@router.get("", response_model=list[AddressOut])
async def list_addresses(principal: Reader, session: DbSession, user_id: UserIdQuery = None):
    """The caller's addresses, default first, then newest first."""
    return await service.list_addresses(session, service.user_to_read(principal, user_id))


# Declared before /{address_id} so "default" is not taken for an address id.
@router.get("/default", response_model=AddressOut)
async def get_default_address(principal: Reader, session: DbSession, user_id: UserIdQuery = None):
    return await service.get_default_address(session, service.user_to_read(principal, user_id))


@router.get("/{address_id}", response_model=AddressOut)
async def get_address(address_id: uuid.UUID, principal: Reader, session: DbSession):
    return await service.get_address(session, address_id, owner=service.owner_scope(principal))


@router.patch("/{address_id}", response_model=AddressOut)
async def update_address(
    address_id: uuid.UUID, body: AddressUpdate, principal: BuyerPrincipal, session: DbSession
):
    return await service.update_address(session, address_id, principal.user_id, body)


@router.delete("/{address_id}", **NO_CONTENT)
async def delete_address(
    address_id: uuid.UUID, principal: BuyerPrincipal, session: DbSession
) -> None:
    await service.delete_address(session, address_id, principal.user_id)


@router.post("/{address_id}/default", response_model=AddressOut)
async def set_default_address(address_id: uuid.UUID, principal: BuyerPrincipal, session: DbSession):
    """Make this address the default; the previous default stops being one."""
    return await service.set_default_address(session, address_id, principal.user_id)
