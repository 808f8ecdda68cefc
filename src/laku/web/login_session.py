"""The browser's login: a short-lived access token and the refresh token that renews it, each
in an HttpOnly cookie. The web front end renews the pair with auth when the access token is
spent (or nearly), so a person stays signed in for as long as auth's session allows."""

import asyncio
import hashlib
import time
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import structlog
from starlette.datastructures import MutableHeaders
from starlette.responses import Response
from starlette.types import Scope

from laku.core.errors import UpstreamUnavailable
from laku.web.config import get_web_settings
from laku.web.security import REFRESH_COOKIE, SESSION_COOKIE, ResponseHeadersMiddleware

log = structlog.get_logger()

# An access token this close to its expiry is renewed before use: a form posted with it would
# otherwise be refused halfway.
RENEW_BEFORE_SECONDS = 60
# Where a renewal is left for the middleware to put in the response's cookies.
_STATE_KEY = "login_renewal"
ENDED = "ended"


@dataclass(frozen=True)
class LoginTokens:
    access_token: str
    expires_in: int
    refresh_token: str
    refresh_expires_in: int

    @classmethod
    def from_answer(cls, answer: dict[str, Any]) -> "LoginTokens":
        return cls(
            answer["accessToken"],
            answer["expiresIn"],
            answer["refreshToken"],
            answer["refreshExpiresIn"],
        )


def nearly_expired(access_token: str) -> bool:
    """Read without checking the signature: only to decide to renew early; the token is
    verified before anything trusts it."""
    try:
        claims = jwt.decode(access_token, options={"verify_signature": False})
        return float(claims["exp"]) - time.time() < RENEW_BEFORE_SECONDS
    except (jwt.PyJWTError, KeyError, TypeError, ValueError):
        return True


class LoginRenewer:
    """Renews login sessions with auth. A refresh token works once, so the requests a page fires
    together (the page, its scripts' calls) share one renewal for a while instead of the second
    presenting a used token, which auth would take for theft and end the session."""

    SHARED_FOR_SECONDS = 30.0

    def __init__(self, http: httpx.AsyncClient, auth_url: str):
        self._http = http
        self._auth_url = auth_url
        self._renewals: dict[str, tuple[float, asyncio.Future[LoginTokens | None]]] = {}

    async def renew(self, refresh_token: str) -> LoginTokens | None:
        """The next pair, or None when auth says the session is over (sign in again)."""
        now = time.monotonic()
        self._renewals = {
            key: entry
            for key, entry in self._renewals.items()
            if now - entry[0] < self.SHARED_FOR_SECONDS
        }
        key = hashlib.sha256(refresh_token.encode()).hexdigest()
        entry = self._renewals.get(key)
        if entry is None:
            entry = (now, asyncio.ensure_future(self._refresh(refresh_token)))
            self._renewals[key] = entry
        try:
            return await asyncio.shield(entry[1])
        except Exception:
            self._renewals.pop(key, None)  # auth unreachable: the next request tries again
            raise

    async def _refresh(self, refresh_token: str) -> LoginTokens | None:
        try:
            response = await self._http.post(
                f"{self._auth_url}/api/auth/refresh", json={"refreshToken": refresh_token}
            )
        except httpx.HTTPError as exc:
            raise UpstreamUnavailable("Cannot renew the session with auth-service") from exc
        if response.status_code in (401, 422):
            return None
        if response.status_code != 200:
            raise UpstreamUnavailable(f"auth-service answered {response.status_code}")
        return LoginTokens.from_answer(response.json())

    async def end(self, access_token: str | None, refresh_token: str | None) -> None:
        """Log out at auth: the session's tokens are refused everywhere within seconds. Best
        effort: the cookies go whatever auth answers."""
        headers = {"authorization": f"Bearer {access_token}"} if access_token else {}
        body = {"refreshToken": refresh_token} if refresh_token else {}
        if not headers and not body:
            return
        try:
            await self._http.post(f"{self._auth_url}/api/auth/logout", json=body, headers=headers)
        except httpx.HTTPError:
            log.warning("logout_not_reached_auth")


def set_login_cookies(response: Response, tokens: LoginTokens) -> None:
    secure = get_web_settings().cookie_secure
    for name, value, max_age in (
        (SESSION_COOKIE, tokens.access_token, tokens.expires_in),
        (REFRESH_COOKIE, tokens.refresh_token, tokens.refresh_expires_in),
    ):
        response.set_cookie(
            name, value, max_age=max_age, httponly=True, secure=secure, samesite="lax", path="/"
        )


def clear_login_cookies(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/")
    response.delete_cookie(REFRESH_COOKIE, path="/")


def leave_renewal(scope: Scope, renewal: LoginTokens | str) -> None:
    """For the middleware: new tokens to set, or ENDED to clear the cookies."""
    scope.setdefault("state", {})[_STATE_KEY] = renewal


class LoginRenewalMiddleware(ResponseHeadersMiddleware):
    """Puts a renewal made while answering (in the visitor dependency) into the response's
    cookies; unless the response sets the login cookies itself (signing in or out)."""

    def add_headers(self, scope: Scope, headers: MutableHeaders) -> None:
        renewal = scope.get("state", {}).get(_STATE_KEY)
        if renewal is None or any(
            value.startswith(f"{SESSION_COOKIE}=") for value in headers.getlist("set-cookie")
        ):
            return
        carrier = Response()
        if isinstance(renewal, LoginTokens):
            set_login_cookies(carrier, renewal)
        else:
            clear_login_cookies(carrier)
        for value in carrier.headers.getlist("set-cookie"):
            headers.append("set-cookie", value)
