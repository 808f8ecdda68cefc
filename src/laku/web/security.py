"""The browser's side of safety: the session cookie, CSRF tokens, and the headers every page
carries (a Content-Security-Policy without inline script, no framing)."""

import hashlib
import hmac
import secrets

from starlette.datastructures import MutableHeaders
from starlette.types import Receive, Scope, Send

from laku.core.middleware import HTTPMiddleware, ResponseStart

SESSION_COOKIE = "laku_session"  # the access token
REFRESH_COOKIE = "laku_refresh"  # the refresh token that renews it
CSRF_COOKIE = "laku_csrf"
LANGUAGE_COOKIE = "laku_lang"
CSRF_FIELD = "csrf"
# A script's JSON post carries the same token in this header (read from the page it runs on).
CSRF_HEADER = "x-csrf-token"

# Every asset is the platform's own; no inline script or style, no plugins, never framed.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'self'; "
    "form-action 'self' http: https:; frame-ancestors 'none'"
)
_HEADERS = (
    ("content-security-policy", CONTENT_SECURITY_POLICY),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "strict-origin-when-cross-origin"),
    ("x-frame-options", "DENY"),
)


class ResponseHeadersMiddleware(HTTPMiddleware):
    """Adds to every HTTP response's headers as it starts, whatever the response is (a page, a
    redirect, JSON, an error)."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(
            scope, receive, ResponseStart(send, lambda headers: self.add_headers(scope, headers))
        )

    def add_headers(self, scope: Scope, headers: MutableHeaders) -> None:
        raise NotImplementedError


class SecurityHeadersMiddleware(ResponseHeadersMiddleware):
    def add_headers(self, scope: Scope, headers: MutableHeaders) -> None:
        for name, value in _HEADERS:
            headers.append(name, value)


class Csrf:
    """Double-submit tokens bound to a secret: the browser holds a random nonce in an HttpOnly
    cookie, each form carries HMAC(secret, nonce). A page elsewhere can neither read the cookie
    nor make the token."""

    def __init__(self, secret: str):
        self._key = hashlib.sha256(b"laku-web-csrf:" + secret.encode()).digest()

    @staticmethod
    def new_nonce() -> str:
        return secrets.token_urlsafe(24)

    def token(self, nonce: str) -> str:
        return hmac.new(self._key, nonce.encode(), hashlib.sha256).hexdigest()

    def valid(self, nonce: str | None, token: str | None) -> bool:
        if not nonce or not token:
            return False
        return hmac.compare_digest(self.token(nonce), token)
