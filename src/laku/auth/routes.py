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
from laku.core.errors import PROBLEM_RESPONSES
from laku.core.security import (
    SERVICE_SUBJECT_PREFIX,
    USER_ROLES,
    Principal,
    Role,
    public,
    require_roles,
)

router = APIRouter(tags=["auth"], responses=PROBLEM_RESPONSES)

# Factory-service creates factory users; notification-service addresses its messages.
UserCreator = Annotated[Principal, Depends(require_roles(Role.ADMIN, services=["factory"]))]
ContactReader = Annotated[Principal, Depends(require_roles(Role.ADMIN, services=["notification"]))]
AnyUser = Annotated[Principal, Depends(require_roles(*USER_ROLES))]


def _signer(request: Request) -> service.TokenSigner:
    return request.app.state.signer


@router.get("/.well-known/jwks.json", response_model=Jwks, dependencies=[Depends(public)])
async def jwks(request: Request) -> dict:
    return _signer(request).jwks()


@router.post(
    "/api/auth/register",
    response_model=UserOut,
    status_code=status.HTTP_201_CREATED,
    dependencies=[Depends(public)],
)
async def register(body: RegisterRequest, session: DbSession):
    return await service.create_user(session, body, Role.BUYER)


@router.post("/api/auth/login", response_model=TokenResponse, dependencies=[Depends(public)])
async def login(body: LoginRequest, request: Request, session: DbSession) -> TokenResponse:
    settings = request.app.state.settings
    user = await service.authenticate(session, settings, body.email, body.password)
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
async def me(principal: AnyUser, session: DbSession):
    return await service.get_user(session, principal.user_id)


@router.post("/api/auth/users", response_model=UserOut, status_code=status.HTTP_201_CREATED)
async def create_user(body: CreateUserRequest, _: UserCreator, session: DbSession):
    """Accounts other than self-registered buyers: admins, and factory users bound to a factory."""
    return await service.create_user(session, body, body.role)


@router.post("/api/auth/users/lookup", response_model=list[UserContactOut])
async def lookup_users(body: UsersLookup, _: ContactReader, session: DbSession):
    """The e-mail, name and phone of up to 2,000 users at once (a service addressing
    notifications); ids that name no user are left out. Reads only: a repeat is answered anew."""
    return await service.user_contacts(session, body.ids)


@router.post(
    "/api/auth/service-token", response_model=TokenResponse, dependencies=[Depends(public)]
)
async def service_token(body: ServiceTokenRequest, request: Request) -> TokenResponse:
    settings = request.app.state.settings
    service.check_service_credential(settings, body.service_name, body.credential)
    ttl = settings.service_token_ttl_seconds
    token = _signer(request).sign(
        settings,
        subject=f"{SERVICE_SUBJECT_PREFIX}{body.service_name}",
        role=Role.SERVICE,
        ttl_seconds=ttl,
    )
    return TokenResponse(access_token=token, expires_in=ttl)
