import time
import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from laku.auth import service, sessions
from laku.auth.keys import TokenSigner
from laku.auth.schemas import (
    CreateUserRequest,
    Jwks,
    LoginRequest,
    LoginResponse,
    LogoutRequest,
    RefreshRequest,
    RegisterRequest,
    RevocationOut,
    RevocationsOut,
    ServiceTokenRequest,
    TokenResponse,
    UserContactOut,
    UserOut,
    UsersLookup,
)
from laku.core.app import DbSession
from laku.core.errors import PROBLEM_RESPONSES, Unauthorized
from laku.core.idempotency import no_store
from laku.core.rate_limit import RATE_LIMITED_RESPONSES, client_address
from laku.core.security import (
    SERVICE_IDENTITIES,
    SERVICE_SUBJECT_PREFIX,
    AnyUser,
    Principal,
    Role,
    public,
    require_roles,
)

router = APIRouter(tags=["auth"], responses=PROBLEM_RESPONSES)

# Factory-service creates factory users; notification-service addresses its messages.
UserCreator = Annotated[Principal, Depends(require_roles(Role.ADMIN, services=["factory"]))]
ContactReader = Annotated[Principal, Depends(require_roles(Role.ADMIN, services=["notification"]))]

_bearer = HTTPBearer(auto_error=False)


def _signer(request: Request) -> TokenSigner:
    return request.app.state.signer


@router.get("/.well-known/jwks.json", response_model=Jwks, dependencies=[Depends(public)])
async def jwks(request: Request) -> dict:
    return _signer(request).jwks()


@router.post(
    "/api/auth/register",
    response_model=UserOut,
    status_code=status.HTTP_201_CREATED,
    dependencies=[Depends(public)],
    responses=RATE_LIMITED_RESPONSES,
)
async def register(body: RegisterRequest, request: Request, session: DbSession):
    settings = request.app.state.settings
    await service.claim_registration(session, settings, body.email, client_address(request))
    return await service.create_user(session, body, Role.BUYER)


def _tokens(request: Request, renewal: sessions.Renewal) -> LoginResponse:
    settings = request.app.state.settings
    user = renewal.user
    service.check_may_hold_token(user)
    ttl = settings.access_token_ttl_seconds
    token = _signer(request).sign(
        settings,
        subject=str(user.id),
        role=Role(user.role),
        ttl_seconds=ttl,
        sid=str(renewal.session_id),
        factoryId=str(user.factory_id) if user.factory_id else None,
    )
    return LoginResponse(
        access_token=token,
        expires_in=ttl,
        refresh_token=renewal.refresh_token,
        refresh_expires_in=settings.refresh_token_ttl_seconds,
    )


@router.post(
    "/api/auth/login",
    response_model=LoginResponse,
    dependencies=[Depends(public), Depends(no_store)],
    responses=RATE_LIMITED_RESPONSES,
)
async def login(body: LoginRequest, request: Request, session: DbSession) -> LoginResponse:
    settings = request.app.state.settings
    user = await service.authenticate(
        session, settings, body.email, body.password, client_address(request)
    )
    service.check_may_hold_token(user)
    return _tokens(request, await sessions.start(session, settings, user))


@router.post(
    "/api/auth/refresh",
    response_model=LoginResponse,
    dependencies=[Depends(public), Depends(no_store)],
)
async def refresh(body: RefreshRequest, request: Request, session: DbSession) -> LoginResponse:
    """A new access token and refresh token for a refresh token, which is used up. A refresh
    token used a second time ends its session (every token of it is refused)."""
    settings = request.app.state.settings
    return _tokens(request, await sessions.refresh(session, settings, body.refresh_token))


# Public as a route: it checks the bearer token or the refresh token itself.
@router.post(
    "/api/auth/logout", status_code=status.HTTP_204_NO_CONTENT, dependencies=[Depends(public)]
)
async def logout(
    request: Request,
    session: DbSession,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    body: LogoutRequest | None = None,
) -> None:
    """Ends the session of the bearer token and/or of the refresh token in the body: its
    refresh tokens stop working at once, its access tokens within seconds on every service."""
    ended: set[uuid.UUID] = set()
    if credentials is not None:
        principal = await request.app.state.token_verifier.verify(credentials.credentials)
        if principal.session_id is not None:
            ended.add(principal.session_id)
    if body is not None and body.refresh_token is not None:
        found = await sessions.session_of(session, body.refresh_token)
        if found is None:
            raise Unauthorized("The refresh token is not valid", code="invalid_refresh_token")
        ended.add(found)
    if not ended:
        raise Unauthorized("A user's bearer token or refresh token is required")
    for session_id in ended:
        await sessions.revoke(session, session_id)
    # Refused here at once, not only after this process's next poll.
    lifetime = request.app.state.settings.access_token_ttl_seconds
    request.app.state.token_verifier.revoke_sessions(ended, time.time() + lifetime)


@router.get("/api/auth/revocations", response_model=RevocationsOut)
async def revocations(
    request: Request,
    _: Annotated[Principal, Depends(require_roles(services=SERVICE_IDENTITIES))],
    session: DbSession,
    since: datetime | None = None,
) -> RevocationsOut:
    """Sessions revoked at or after `since` (all whose tokens may still be alive without it):
    what every service's token verifier polls."""
    as_of, items = await sessions.revocations(session, request.app.state.settings, since)
    return RevocationsOut(
        as_of=as_of, revocations=[RevocationOut.model_validate(item) for item in items]
    )


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
    "/api/auth/service-token",
    response_model=TokenResponse,
    dependencies=[Depends(public), Depends(no_store)],
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
