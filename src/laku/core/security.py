"""Verifying access tokens (EdDSA JWTs signed by auth-service), and who may call what: each
operation declares its access rule once, as a dependency, and the rule is published in the
service's OpenAPI as `x-laku-access` (the access test is generated from it)."""

import hashlib
import hmac
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, TypeVar

import httpx
import jwt
from fastapi import Depends, FastAPI, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from laku.core.errors import Forbidden, Unauthorized, UpstreamUnavailable
from laku.core.services import SERVICES

ALGORITHM = "EdDSA"


class Role(StrEnum):
    BUYER = "buyer"
    ADMIN = "admin"
    FACTORY = "factory"
    SERVICE = "service"


USER_ROLES = (Role.BUYER, Role.ADMIN, Role.FACTORY)
SERVICE_SUBJECT_PREFIX = "service:"
"""A service token's `sub` is `service:<name>`: the calling service, as auth-service verified it."""


def service_credential(service_secret: str, service_name: str) -> str:
    """What a service presents to auth-service to be issued a token in its own name:
    HMAC-SHA256(service_secret, name). Knowing one service's credential gives no other's, so
    each service can be given only its own (`LAKU_SERVICE_CREDENTIAL`)."""
    return hmac.new(service_secret.encode(), service_name.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user (buyer, admin, factory) or another service."""

    subject: str
    role: Role
    factory_id: uuid.UUID | None = None

    @property
    def user_id(self) -> uuid.UUID:
        if self.role is Role.SERVICE:
            raise Forbidden("A service has no user id")
        return uuid.UUID(self.subject)

    @property
    def service_name(self) -> str | None:
        """The calling service's name, for a service token; None for a user."""
        if self.role is not Role.SERVICE or not self.subject.startswith(SERVICE_SUBJECT_PREFIX):
            return None
        return self.subject.removeprefix(SERVICE_SUBJECT_PREFIX)

    @property
    def is_privileged(self) -> bool:
        """Admins and internal services act on any user's data."""
        return self.role in (Role.ADMIN, Role.SERVICE)


class TokenVerifier:
    """Verifies tokens locally against auth-service's JWKS, refetched when a new key id appears."""

    REFRESH_INTERVAL_SECONDS = 30.0
    # Verified tokens are remembered until they expire: a signature check costs more than the
    # rest of a typical request, and service tokens are reused for every internal call.
    CACHE_SIZE = 10_000

    def __init__(self, jwks_url: str, *, issuer: str, audience: str, http: httpx.AsyncClient):
        self._jwks_url = jwks_url
        self._issuer = issuer
        self._audience = audience
        self._http = http
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = 0.0
        self._verified: dict[str, tuple[Principal, float]] = {}

    def use_keys(self, jwks: dict[str, Any]) -> None:
        self._keys = {key["kid"]: jwt.PyJWK(key) for key in jwks["keys"]}
        self._fetched_at = time.monotonic()

    async def _refresh(self) -> None:
        try:
            response = await self._http.get(self._jwks_url)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            raise UpstreamUnavailable("Cannot fetch signing keys from auth-service") from exc
        self.use_keys(response.json())

    async def _key(self, kid: str) -> jwt.PyJWK:
        if (
            kid not in self._keys
            and time.monotonic() - self._fetched_at > self.REFRESH_INTERVAL_SECONDS
        ):
            await self._refresh()
        try:
            return self._keys[kid]
        except KeyError:
            raise Unauthorized("Token signed by an unknown key", code="invalid_token") from None

    async def verify(self, token: str) -> Principal:
        cached = self._verified.get(token)
        if cached is not None and cached[1] > time.time():
            return cached[0]
        principal, expires_at = await self._verify_signature(token)
        if len(self._verified) >= self.CACHE_SIZE:
            self._verified.clear()
        self._verified[token] = (principal, expires_at)
        return principal

    async def _verify_signature(self, token: str) -> tuple[Principal, float]:
        try:
            kid = jwt.get_unverified_header(token).get("kid", "")
        except jwt.PyJWTError:
            raise Unauthorized("Malformed token", code="invalid_token") from None
        key = await self._key(kid)
        try:
            claims = jwt.decode(
                token,
                key=key,
                algorithms=[ALGORITHM],
                issuer=self._issuer,
                audience=self._audience,
                options={"require": ["exp", "sub", "role"]},
            )
            role = Role(claims["role"])
        except (jwt.PyJWTError, ValueError) as exc:
            raise Unauthorized(f"Invalid token: {exc}", code="invalid_token") from None
        factory_id = claims.get("factoryId")
        principal = Principal(
            subject=claims["sub"],
            role=role,
            factory_id=uuid.UUID(factory_id) if factory_id else None,
        )
        return principal, float(claims["exp"])


_bearer = HTTPBearer(auto_error=False)


async def current_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("A bearer token is required")
    verifier: TokenVerifier = request.app.state.token_verifier
    return await verifier.verify(credentials.credentials)


@dataclass(frozen=True)
class Access:
    """Who may call an operation: nobody needs a token (`public`); a provider's webhook, known
    by its own shared secret (`webhook`); else users with one of `roles` and the services
    named in `services` (a service token names its caller)."""

    roles: frozenset[Role] = frozenset()
    services: frozenset[str] = frozenset()
    public: bool = False
    webhook: bool = False

    def openapi(self) -> dict[str, Any]:
        if self.public:
            return {"public": True}
        if self.webhook:
            return {"webhook": True}
        return {"roles": sorted(r.value for r in self.roles), "services": sorted(self.services)}


PUBLIC = Access(public=True)
PROVIDER_WEBHOOK = Access(webhook=True)
ACCESS_EXTENSION = "x-laku-access"

Dependency = TypeVar("Dependency", bound=Callable[..., Any])


def declares_access(access: Access) -> Callable[[Dependency], Dependency]:
    """Marks a dependency as the operation's access rule (read back by `access_of`)."""

    def mark(dependency: Dependency) -> Dependency:
        dependency.laku_access = access  # type: ignore[attr-defined]
        return dependency

    return mark


@declares_access(PUBLIC)
async def public() -> None:
    """Declares an operation open to anyone, without a token."""


def require_roles(*roles: Role, services: Iterable[str] = ()):
    """A dependency admitting users with one of `roles` and the services named in `services`
    (401 without a valid token, 403 for anyone else). A service is admitted only by name: an
    internal endpoint lists the services whose clients call it."""
    if Role.SERVICE in roles:
        raise ValueError("Name the calling services (services=...) instead of Role.SERVICE")
    allowed_services = frozenset(services)
    unknown = allowed_services - SERVICES.keys()
    if unknown:
        raise ValueError(f"Unknown services: {sorted(unknown)}")
    access = Access(roles=frozenset(roles), services=allowed_services)

    @declares_access(access)
    async def dependency(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        if principal.role is Role.SERVICE:
            if principal.service_name not in access.services:
                raise Forbidden(
                    f"Service {principal.service_name!r} may not call this operation",
                    code="service_not_allowed",
                )
        elif principal.role not in access.roles:
            raise Forbidden(f"Requires role {' or '.join(sorted(access.roles)) or 'service'}")
        return principal

    return dependency


def require_service_callers(*services: str):
    """A dependency admitting only the named services (internal endpoints no user calls)."""
    return require_roles(services=services)


def access_of(dependant: Dependant) -> Access | None:
    """The access rule an operation declares through its dependencies; None if it declares
    none. Two different rules on one operation are a mistake, refused here."""
    found: set[Access] = set()
    pending = [dependant]
    while pending:
        current = pending.pop()
        access = getattr(current.call, "laku_access", None)
        if access is not None:
            found.add(access)
        pending.extend(current.dependencies)
    if len(found) > 1:
        raise ValueError(f"{dependant.path}: conflicting access rules {found}")
    return found.pop() if found else None


def publish_access_rules(app: FastAPI) -> None:
    """Adds each operation's access rule to the app's OpenAPI as `x-laku-access`; an operation
    without one gets none (and the access test fails on it)."""
    build_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        schema = build_openapi()  # cached by FastAPI; the rules are set again, unchanged
        for route in iter_route_contexts(app.routes):
            if not isinstance(route.original_route, APIRoute) or not route.include_in_schema:
                continue
            access = access_of(route.dependant)
            if access is None:
                continue
            for method in route.methods:
                operation = schema["paths"][route.path_format][method.lower()]
                operation[ACCESS_EXTENSION] = access.openapi()
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]
AdminPrincipal = Annotated[Principal, Depends(require_roles(Role.ADMIN))]
"""Admin-only writes. Internal services that need them get their own narrower endpoints."""
