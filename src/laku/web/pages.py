"""Who is asking (person, language, CSRF nonce) and how a page is rendered for them."""

import uuid
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.datastructures import FormData

from laku.core.errors import DomainError
from laku.core.http import ServiceCallError, forwarded_for
from laku.core.security import Principal, Role
from laku.web import formatting
from laku.web.backend import Backend
from laku.web.config import TEMPLATES_DIR, get_web_settings
from laku.web.i18n import DEFAULT_LANGUAGE, LANGUAGES, problem_message, translate
from laku.web.login_session import ENDED, leave_renewal, nearly_expired
from laku.web.security import (
    CSRF_COOKIE,
    CSRF_FIELD,
    CSRF_HEADER,
    LANGUAGE_COOKIE,
    REFRESH_COOKIE,
    SESSION_COOKIE,
)

# Group-buying's session statuses as its API names them. The admin's and a factory's lists ask
# for every one; the storefront lists only the open ones (group-buying's default).
OPEN_SESSION_STATUSES = ("forming", "active", "moq_reached")
SESSION_STATUSES = (
    *OPEN_SESSION_STATUSES,
    *("pending_stock", "stock_received", "success", "failed", "cancelled"),
)

templates = Environment(
    loader=FileSystemLoader(TEMPLATES_DIR),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)
templates.filters["rupiah"] = formatting.rupiah
templates.filters["wib"] = formatting.wib
templates.filters["duration"] = formatting.duration


class LoginRequired(Exception):
    """No valid session: the person is sent to log in, and back here afterwards."""


class NotAllowed(Exception):
    """Signed in, but this area is not theirs (a buyer at /admin, a factory at another's data)."""


class CsrfRefused(Exception):
    """A POST without this browser's CSRF token: forged, or from a page rendered long ago."""


@dataclass
class Visitor:
    request: Request
    backend: Backend
    lang: str
    csrf_nonce: str
    new_nonce: bool
    principal: Principal | None = None

    @property
    def csrf_token(self) -> str:
        return self.request.app.state.csrf.token(self.csrf_nonce)

    def t(self, key: str, **values: object) -> str:
        return translate(self.lang, key, **values)

    def refusal(self, exc: DomainError) -> str:
        """A service's refusal as the person reads it, in the page's language."""
        if isinstance(exc, ServiceCallError):
            fields = tuple(
                str(error["loc"][-1]) for error in exc.problem.get("errors") or () if error["loc"]
            )
            return problem_message(self.lang, exc.code, exc.detail, fields)
        if exc.status >= 500:
            return self.t("error.unavailable")
        return problem_message(self.lang, exc.code, exc.detail)

    @property
    def role(self) -> str | None:
        return self.principal.role.value if self.principal else None


async def _visitor(request: Request) -> Visitor:
    state = request.app.state
    if request.client is not None:
        forwarded_for.set(request.client.host)  # on the calls made for this visitor
    lang = request.cookies.get(LANGUAGE_COOKIE, DEFAULT_LANGUAGE)
    if lang not in LANGUAGES:
        lang = DEFAULT_LANGUAGE
    nonce = request.cookies.get(CSRF_COOKIE)
    new_nonce = not nonce
    token, principal = await _signed_in(request)
    visitor = Visitor(
        request=request,
        backend=Backend(state.http, state.settings, token),
        lang=lang,
        csrf_nonce=nonce or state.csrf.new_nonce(),
        new_nonce=new_nonce,
        principal=principal,
    )
    request.state.visitor = visitor
    return visitor


async def _signed_in(request: Request) -> tuple[str | None, Principal | None]:
    """The access token and who it names; renewed with the refresh token when spent or
    nearly. Neither works (expired, revoked, forged): browse as a visitor, log in to act."""
    state = request.app.state
    token = request.cookies.get(SESSION_COOKIE)
    refresh_token = request.cookies.get(REFRESH_COOKIE)
    if token and not (refresh_token and nearly_expired(token)):
        try:
            return token, await state.token_verifier.verify(token)
        except DomainError:
            pass
    if not refresh_token:
        return None, None
    try:
        renewed = await state.login_renewer.renew(refresh_token)
    except DomainError:
        return None, None  # auth unreachable: a visitor for now, the cookies kept for later
    if renewed is None:
        leave_renewal(request.scope, ENDED)
        return None, None
    try:
        principal = await state.token_verifier.verify(renewed.access_token)
    except DomainError:
        leave_renewal(request.scope, ENDED)
        return None, None
    leave_renewal(request.scope, renewed)
    return renewed.access_token, principal


def _role_required(*roles: Role):
    async def dependency(visitor: Annotated[Visitor, Depends(_visitor)]) -> Visitor:
        if visitor.principal is None:
            raise LoginRequired
        if visitor.principal.role not in roles:
            raise NotAllowed
        return visitor

    return dependency


async def csrf_checked(request: Request) -> FormData:
    """The posted form, once its CSRF token matches this browser's nonce."""
    form = await request.form()
    token = form.get(CSRF_FIELD)
    if not request.app.state.csrf.valid(
        request.cookies.get(CSRF_COOKIE), token if isinstance(token, str) else None
    ):
        raise CsrfRefused
    return form


async def csrf_header_checked(request: Request) -> None:
    """A script's post (JSON, not a form): its CSRF token comes in a header instead."""
    if not request.app.state.csrf.valid(
        request.cookies.get(CSRF_COOKIE), request.headers.get(CSRF_HEADER)
    ):
        raise CsrfRefused


AnyVisitor = Annotated[Visitor, Depends(_visitor)]
Buyer = Annotated[Visitor, Depends(_role_required(Role.BUYER))]
Admin = Annotated[Visitor, Depends(_role_required(Role.ADMIN))]
FactoryStaff = Annotated[Visitor, Depends(_role_required(Role.FACTORY))]
Form = Annotated[FormData, Depends(csrf_checked)]
CsrfHeader = Depends(csrf_header_checked)


def set_cookies(visitor: Visitor, response: HTMLResponse) -> None:
    if visitor.new_nonce:
        response.set_cookie(
            CSRF_COOKIE,
            visitor.csrf_nonce,
            httponly=True,
            samesite="lax",
            secure=get_web_settings().cookie_secure,
            path="/",
        )


def render(
    visitor: Visitor, template: str, *, status_code: int = 200, **context: Any
) -> HTMLResponse:
    request = visitor.request
    html = templates.get_template(template).render(
        request=request,
        visitor=visitor,
        t=visitor.t,
        lang=visitor.lang,
        csrf_field=CSRF_FIELD,
        path=request.url.path,
        new_key=uuid.uuid4().hex,
        here=quote(str(request.url.path) + (f"?{request.url.query}" if request.url.query else "")),
        **context,
    )
    response = HTMLResponse(html, status_code=status_code)
    set_cookies(visitor, response)
    if visitor.principal is not None:
        # Signed-in pages hold personal data: never stored by shared caches.
        response.headers["cache-control"] = "private, no-store"
    return response


def form_values(form: FormData) -> dict[str, str]:
    """What the person typed, to show back on a refused form (never the password, nor the token)."""
    return {
        key: value
        for key, value in form.items()
        if isinstance(value, str) and key not in (CSRF_FIELD, "password")
    }


def int_field(form: FormData, name: str) -> int | None:
    value = form.get(name)
    if not isinstance(value, str):
        return None
    try:
        return int(value.strip().replace(".", "").replace(",", ""))
    except ValueError:
        return None


def safe_next(target: str | None, default: str = "/") -> str:
    """Only a path on this site: never an open redirect to another."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return default
