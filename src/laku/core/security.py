"""Verifying access tokens (EdDSA JWTs signed by auth-service), and who may call what: each
operation declares its access rule once, as a dependency, and the rule is published in the
service's OpenAPI as `x-laku-access` (the access test is generated from it)."""

import asyncio
import hashlib
import hmac
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, TypeVar

import httpx
import jwt
import structlog
from fastapi import Depends, FastAPI, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from laku.core.errors import DomainError, Forbidden, Unauthorized, UpstreamUnavailable
from laku.core.http import TokenSource
from laku.core.services import SERVICES

log = structlog.get_logger()

ALGORITHM = "EdDSA"


class Role(StrEnum):
    BUYER = "buyer"
    ADMIN = "admin"
    FACTORY = "factory"
    SERVICE = "service"


USER_ROLES = (Role.BUYER, Role.ADMIN, Role.FACTORY)
# Who may hold a service token: the services, and the web front end (it follows the revocation
# feed like every service).
SERVICE_IDENTITIES = frozenset({*SERVICES, "web"})
SERVICE_SUBJECT_PREFIX = "service:"
"""A service token's `sub` is `service:<name>`: the calling service, as auth-service verified it."""


def service_credential(service_secret: str, service_name: str) -> str:
    """What a service presents to auth-service to be issued a token in its own name:
    HMAC-SHA256(service_secret, name). Knowing one service's credential gives no other's, so
    each service can be given only its own (`LAKU_SERVICE_CREDENTIAL`)."""
    return hmac.new(service_secret.encode(), service_name.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user (buyer, admin, factory) or another service. A user's token names
    its login session (`session_id`), which logging out revokes."""

    subject: str
    role: Role
    factory_id: uuid.UUID | None = None
    session_id: uuid.UUID | None = None

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

    def listed_user(self, user_id: uuid.UUID | None, what: str) -> uuid.UUID | None:
        """Whose `what` a list shows: the user asked for (or everyone) for admins and services;
        a buyer's own, and another's refused."""
        if self.is_privileged:
            return user_id
        if user_id is not None and user_id != self.user_id:
            raise Forbidden(f"A buyer sees only their own {what}")
        return self.user_id

    @property
    def is_unbound_factory(self) -> bool:
        """A factory account without a factory: it sees nothing (every factory filter fails
        closed on it). Auth issues no such token and verifiers refuse one; this is the last
        guard."""
        return self.role is Role.FACTORY and self.factory_id is None


class TokenVerifier:
    """Verifies tokens locally against auth-service's JWKS (refetched when a new key id
    appears) and refuses those of sessions auth has revoked (`follow_revocations`)."""

    # An unknown key id refetches the JWKS at most this often: a rotation's new key is found
    # at once, a flood of forged key ids costs one fetch a second.
    MIN_REFETCH_SECONDS = 1.0
    # Verified tokens are remembered until they expire: a signature check costs more than the
    # rest of a typical request, and service tokens are reused for every internal call.
    CACHE_SIZE = 10_000
    # Each poll asks from this long before the previous answer's time: a revocation whose
    # transaction was still committing then carries an earlier time.
    REVOCATION_OVERLAP = timedelta(seconds=10)

    def __init__(self, jwks_url: str, *, issuer: str, audience: str, http: httpx.AsyncClient):
        self._jwks_url = jwks_url
        self._issuer = issuer
        self._audience = audience
        self._http = http
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = float("-inf")
        self._fetch_lock = asyncio.Lock()
        self._verified: dict[str, tuple[Principal, float]] = {}
        # Revoked session id -> when its last access token expires (epoch seconds).
        self._revoked: dict[uuid.UUID, float] = {}
        self._revocations_since: datetime | None = None

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
        if kid not in self._keys:
            asked_at = time.monotonic()
            async with self._fetch_lock:
                # Requests waiting together share one fetch made after they arrived.
                if kid not in self._keys and self._fetched_at < asked_at:
                    wait = self._fetched_at + self.MIN_REFETCH_SECONDS - time.monotonic()
                    if wait > 0:
                        await asyncio.sleep(wait)
                    await self._refresh()
        try:
            return self._keys[kid]
        except KeyError:
            raise Unauthorized("Token signed by an unknown key", code="invalid_token") from None

    async def verify(self, token: str) -> Principal:
        cached = self._verified.get(token)
        if cached is not None and cached[1] > time.time():
            principal = cached[0]
        else:
            principal, expires_at = await self._verify_signature(token)
            if len(self._verified) >= self.CACHE_SIZE:
                self._verified.clear()
            self._verified[token] = (principal, expires_at)
        if principal.session_id is not None and principal.session_id in self._revoked:
            raise Unauthorized("This session has ended; sign in again", code="token_revoked")
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
            factory_id = uuid.UUID(claims["factoryId"]) if claims.get("factoryId") else None
            session_id = uuid.UUID(claims["sid"]) if claims.get("sid") else None
        except (jwt.PyJWTError, ValueError, TypeError, AttributeError) as exc:
            raise Unauthorized(f"Invalid token: {exc}", code="invalid_token") from None
        if role is Role.FACTORY and factory_id is None:
            raise Unauthorized("A factory token must name its factory", code="invalid_token")
        if role is not Role.SERVICE and session_id is None:
            raise Unauthorized("A user's token must name its session", code="invalid_token")
        principal = Principal(
            subject=claims["sub"], role=role, factory_id=factory_id, session_id=session_id
        )
        return principal, float(claims["exp"])

    # Revocation ------------------------------------------------------------------------------

    def revoke_sessions(self, session_ids: Iterable[uuid.UUID], until: float) -> None:
        """Refuse these sessions' tokens from now on; forget them after `until` (epoch
        seconds), when none of their tokens can be valid any more."""
        for session_id in session_ids:
            self._revoked[session_id] = max(self._revoked.get(session_id, 0.0), until)

    def _apply_revocations(self, answer: dict[str, Any]) -> None:
        now = time.time()
        for item in answer["revocations"]:
            until = datetime.fromisoformat(item["tokensValidUntil"]).timestamp()
            if until > now:
                self.revoke_sessions([uuid.UUID(item["sessionId"])], until)
        # A revoked session is forgotten once none of its tokens can be valid any more.
        self._revoked = {sid: until for sid, until in self._revoked.items() if until > now}
        self._revocations_since = datetime.fromisoformat(answer["asOf"]) - self.REVOCATION_OVERLAP

    async def poll_revocations(self, url: str, tokens: TokenSource) -> None:
        """One poll of auth's revocation feed."""
        params = {"since": self._revocations_since.isoformat()} if self._revocations_since else {}
        response = await self._http.get(
            url, params=params, headers={"authorization": f"Bearer {await tokens.token()}"}
        )
        response.raise_for_status()
        self._apply_revocations(response.json())

    async def follow_revocations(self, url: str, tokens: TokenSource, interval: float) -> None:
        """Poll auth's revocation feed every `interval` seconds for as long as the service
        runs. While auth cannot be reached the sessions already known stay refused and the
        failure is logged; requests go on being served (auth down must not stop the platform)."""
        failing, ever_polled = False, False
        while True:
            try:
                await self.poll_revocations(url, tokens)
            except (httpx.HTTPError, DomainError, KeyError, ValueError) as exc:
                if not failing:
                    # Before the first answer auth is most likely still starting, as we are.
                    (log.warning if ever_polled else log.info)(
                        "revocations_poll_failed", error=str(exc)
                    )
                failing = True
            else:
                if failing:
                    log.info("revocations_poll_recovered")
                failing, ever_polled = False, True
            await asyncio.sleep(interval)


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
    unknown = allowed_services - SERVICE_IDENTITIES
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


# The role rules more than one service uses. A rule admitting particular services stays beside
# the routes it guards, named for its callers (`PaymentReporter`, `OrderCreator`...).
CurrentPrincipal = Annotated[Principal, Depends(current_principal)]
AdminPrincipal = Annotated[Principal, Depends(require_roles(Role.ADMIN))]
"""Admin-only writes. Internal services that need them get their own narrower endpoints."""
BuyerPrincipal = Annotated[Principal, Depends(require_roles(Role.BUYER))]
FactoryPrincipal = Annotated[Principal, Depends(require_roles(Role.FACTORY))]
AnyUser = Annotated[Principal, Depends(require_roles(*USER_ROLES))]
BuyerOrAdmin = Annotated[Principal, Depends(require_roles(Role.BUYER, Role.ADMIN))]
"""A buyer reads their own; an admin reads anyone's."""
AdminOrFactory = Annotated[Principal, Depends(require_roles(Role.ADMIN, Role.FACTORY))]
"""An admin reads every factory's; a factory account only its own factory's."""
Auditor = Annotated[Principal, Depends(require_roles(Role.ADMIN, services=["settlement"]))]
"""Settlement runs the platform's audit, which reads every service's own figures."""
