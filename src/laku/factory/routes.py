import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, status

from laku.auth.client import AuthClient, UserOut
from laku.core.app import DbSession
from laku.core.errors import PROBLEM_RESPONSES, NotFound
from laku.core.routing import app_state
from laku.core.schemas import Page, Paging, SearchText
from laku.core.security import AdminPrincipal, BuyerPrincipal, FactoryPrincipal, public
from laku.factory import service
from laku.factory.rules import VerificationStatus
from laku.factory.schemas import (
    FactoryCreate,
    FactoryOut,
    FactoryUpdate,
    FactoryUserCreate,
    ReviewCreate,
    ReviewOut,
    VerificationUpdate,
)

router = APIRouter(tags=["factory"], responses=PROBLEM_RESPONSES)


# auth-service, where a factory's staff get their logins.
Auth = Annotated[AuthClient, Depends(app_state("auth_client"))]


@router.post("/api/factories", response_model=FactoryOut, status_code=status.HTTP_201_CREATED)
async def create_factory(body: FactoryCreate, _: AdminPrincipal, session: DbSession):
    return await service.create_factory(session, body)


@router.get("/api/factories", response_model=Page[FactoryOut], dependencies=[Depends(public)])
async def list_factories(
    session: DbSession,
    paging: Paging,
    verification_status: Annotated[
        VerificationStatus | None, Query(alias="verificationStatus")
    ] = None,
    q: SearchText = None,
) -> Page[FactoryOut]:
    return await Page.read(
        paging,
        FactoryOut,
        service.list_factories,
        session,
        status=verification_status,
        name_contains=q,
    )


# Declared before /{factory_id} so "me" is not read as an id.
@router.get("/api/factories/me", response_model=FactoryOut)
async def my_factory(principal: FactoryPrincipal, session: DbSession):
    if principal.factory_id is None:
        raise NotFound("This account is not bound to a factory", code="factory_not_found")
    return await service.get_factory(session, principal.factory_id)


@router.get(
    "/api/factories/{factory_id}", response_model=FactoryOut, dependencies=[Depends(public)]
)
async def get_factory(factory_id: uuid.UUID, session: DbSession):
    return await service.get_factory(session, factory_id)


@router.patch("/api/factories/{factory_id}", response_model=FactoryOut)
async def update_factory(
    factory_id: uuid.UUID, body: FactoryUpdate, _: AdminPrincipal, session: DbSession
):
    return await service.update_factory(session, factory_id, body)


@router.patch("/api/factories/{factory_id}/verification", response_model=FactoryOut)
async def set_verification(
    factory_id: uuid.UUID, body: VerificationUpdate, _: AdminPrincipal, session: DbSession
):
    return await service.set_verification(session, factory_id, body)


@router.post(
    "/api/factories/{factory_id}/reviews",
    response_model=ReviewOut,
    status_code=status.HTTP_201_CREATED,
)
async def add_review(
    factory_id: uuid.UUID, body: ReviewCreate, principal: BuyerPrincipal, session: DbSession
):
    return await service.add_review(session, factory_id, principal.user_id, body)


@router.get(
    "/api/factories/{factory_id}/reviews",
    response_model=Page[ReviewOut],
    dependencies=[Depends(public)],
)
async def list_reviews(
    factory_id: uuid.UUID, session: DbSession, paging: Paging
) -> Page[ReviewOut]:
    return await Page.read(paging, ReviewOut, service.list_reviews, session, factory_id)


@router.post(
    "/api/factories/{factory_id}/users",
    response_model=UserOut,
    status_code=status.HTTP_201_CREATED,
)
async def create_factory_user(
    factory_id: uuid.UUID,
    body: FactoryUserCreate,
    _: AdminPrincipal,
    session: DbSession,
    auth: Auth,
):
    """A login for the factory's staff, created in auth-service with the factory role."""
    return await service.create_factory_user(session, auth, factory_id, body)
