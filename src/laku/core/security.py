"""Verifying access tokens (EdDSA JWTs signed by auth-service) and checking roles."""

import time
import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any

import httpx
import jwt
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from laku.core.errors import Forbidden, Unauthorized, UpstreamUnavailable

ALGORITHM = "EdDSA"


class Role(StrEnum):
    BUYER = "buyer"
    ADMIN = "admin"
    FACTORY = "factory"
    SERVICE = "service"


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


def require_roles(*roles: Role):
    """A dependency admitting only the given roles (401 without a token, 403 with another role)."""

    allowed = frozenset(roles)

    async def dependency(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        if principal.role not in allowed:
            raise Forbidden(f"Requires role {' or '.join(sorted(allowed))}")
        return principal

    return dependency


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]
AdminPrincipal = Annotated[Principal, Depends(require_roles(Role.ADMIN))]
"""Admin-only writes. Internal services that need them get their own narrower endpoints."""
