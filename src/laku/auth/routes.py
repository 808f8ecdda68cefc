from typing import Annotated

from fastapi import APIRouter, Depends, Request, status

from laku.auth import service
from laku.auth.schemas import (
    CreateUserRequest,
    Jwks,
    LoginRequest,
    RegisterRequest,
    ServiceTokenRequest,
    TokenResponse,
    UserContactOut,
    UserOut,
    UsersLookup,
)
from laku.core.app import DbSession
from laku.core.errors import PROBLEM_RESPONSES, Forbidden
from laku.core.rate_limit import RATE_LIMITED_RESPONSES, client_address
from laku.core.security import CurrentPrincipal, Principal, Role, require_roles

router = APIRouter(tags=["auth"], responses=PROBLEM_RESPONSES)

AdminOrService = Annotated[Principal, Depends(require_roles(Role.ADMIN, Role.SERVICE))]


def _signer(request: Request) -> service.TokenSigner:
    return request.app.state.signer


@router.get("/.well-known/jwks.json", response_model=Jwks)
async def jwks(request: Request) -> dict:
    return _signer(request).jwks()


@router.post(
    "/api/auth/register",
    response_model=UserOut,
    status_code=status.HTTP_201_CREATED,
    responses=RATE_LIMITED_RESPONSES,
)
async def register(body: RegisterRequest, request: Request, session: DbSession):
    settings = request.app.state.settings
    await service.claim_registration(session, settings, body.email, client_address(request))
    return await service.create_user(session, body, Role.BUYER)


@router.post("/api/auth/login", response_model=TokenResponse, responses=RATE_LIMITED_RESPONSES)
async def login(body: LoginRequest, request: Request, session: DbSession) -> TokenResponse:
    settings = request.app.state.settings
    user = await service.authenticate(
        session, settings, body.email, body.password, client_address(request)
    )
    ttl = settings.access_token_ttl_seconds
    token = _signer(request).sign(
        settings,
        subject=str(user.id),
        role=Role(user.role),
        ttl_seconds=ttl,
        factoryId=str(user.factory_id) if user.factory_id else None,
    )
    return TokenResponse(access_token=token, expires_in=ttl)


@router.get("/api/auth/me", response_model=UserOut)
async def me(principal: CurrentPrincipal, session: DbSession):
    if principal.role is Role.SERVICE:
        raise Forbidden("A service identity has no account", code="not_a_user")
    return await service.get_user(session, principal.user_id)


@router.post("/api/auth/users", response_model=UserOut, status_code=status.HTTP_201_CREATED)
async def create_user(body: CreateUserRequest, _: AdminOrService, session: DbSession):
    """Accounts other than self-registered buyers: admins, and factory users bound to a factory."""
    return await service.create_user(session, body, body.role)


@router.post("/api/auth/users/lookup", response_model=list[UserContactOut])
async def lookup_users(body: UsersLookup, _: AdminOrService, session: DbSession):
    """The e-mail, name and phone of up to 2,000 users at once (a service addressing
    notifications); ids that name no user are left out. Reads only: a repeat is answered anew."""
    return await service.user_contacts(session, body.ids)


@router.post("/api/auth/service-token", response_model=TokenResponse)
async def service_token(body: ServiceTokenRequest, request: Request) -> TokenResponse:
    settings = request.app.state.settings
    service.check_service_secret(settings, body.secret)
    ttl = settings.service_token_ttl_seconds
    token = _signer(request).sign(
        settings, subject=f"service:{body.service_name}", role=Role.SERVICE, ttl_seconds=ttl
    )
    return TokenResponse(access_token=token, expires_in=ttl)
