"""The web front end's FastAPI factory: pages, static assets, the session and its safety."""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Scope

from laku.core.app import own_service_credential
from laku.core.errors import DomainError
from laku.core.http import ServiceTokenSource, new_http_client
from laku.core.logging import configure_logging
from laku.core.metrics import MetricsMiddleware
from laku.core.middleware import BodyLimitMiddleware, RequestContextMiddleware
from laku.core.security import TokenVerifier
from laku.core.services import service_url
from laku.core.settings import Settings, get_settings
from laku.web.config import STATIC_DIR
from laku.web.login_session import LoginRenewalMiddleware, LoginRenewer
from laku.web.pages import CsrfRefused, LoginRequired, NotAllowed, _visitor, render
from laku.web.routes import account, factory, storefront
from laku.web.routes.admin import catalog, dashboard, group_buys, money, orders
from laku.web.security import Csrf, SecurityHeadersMiddleware

log = structlog.get_logger()

# Product photos come through the web to the product service: allow a phone camera's picture.
MAX_UPLOAD_BYTES = 8 * 1024 * 1024


class CachedStaticFiles(StaticFiles):
    """Assets change only with a release: a day in the browser's cache."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        if response.status_code == 200:
            response.headers["cache-control"] = "public, max-age=86400"
        return response


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(settings, "web")
        app.state.settings = settings
        app.state.http = new_http_client(settings.http_timeout_seconds)
        app.state.token_verifier = TokenVerifier(
            f"{service_url('auth', settings)}/.well-known/jwks.json",
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            http=app.state.http,
        )
        app.state.csrf = Csrf(own_service_credential(settings, "web"))
        auth_url = service_url("auth", settings)
        app.state.login_renewer = LoginRenewer(app.state.http, auth_url)
        revocations = asyncio.create_task(
            app.state.token_verifier.follow_revocations(
                f"{auth_url}/api/auth/revocations",
                ServiceTokenSource(
                    app.state.http, auth_url, "web", own_service_credential(settings, "web")
                ),
                settings.revocation_poll_interval_seconds,
            )
        )
        try:
            yield
        finally:
            revocations.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await revocations
            await app.state.http.aclose()

    app = FastAPI(
        title="laku web", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )
    app.add_middleware(
        BodyLimitMiddleware, max_bytes=max(settings.max_body_bytes, MAX_UPLOAD_BYTES)
    )
    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(LoginRenewalMiddleware)
    app.add_middleware(RequestContextMiddleware)
    app.add_middleware(MetricsMiddleware)
    app.mount("/static", CachedStaticFiles(directory=STATIC_DIR), name="static")
    # Product photos product-service stored on this machine's disk (development).
    media_dir = settings.media_dir or settings.data_dir / "media"
    media_dir.mkdir(parents=True, exist_ok=True)
    app.mount("/media", CachedStaticFiles(directory=media_dir), name="media")

    @app.get("/health", include_in_schema=False)
    async def health() -> JSONResponse:
        return JSONResponse({"status": "ok", "service": "web"})

    @app.get("/ready", include_in_schema=False)
    async def ready() -> JSONResponse:
        return JSONResponse({"status": "ready", "service": "web"})

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/sw.js", include_in_schema=False)
    async def service_worker() -> FileResponse:
        """The Web Push service worker, at the root so its scope is the whole site. Checked
        again on each registration: a release's worker replaces the old one at once."""
        return FileResponse(
            STATIC_DIR / "sw.js",
            media_type="text/javascript",
            headers={"service-worker-allowed": "/", "cache-control": "no-cache"},
        )

    @app.exception_handler(LoginRequired)
    async def login_required(request: Request, _: LoginRequired) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={target}", status_code=303)

    async def error_page(request: Request, status: int, message_key: str) -> HTMLResponse:
        visitor = getattr(request.state, "visitor", None) or await _visitor(request)
        return render(visitor, "error.html", status_code=status, message=visitor.t(message_key))

    @app.exception_handler(NotAllowed)
    async def not_allowed(request: Request, _: NotAllowed) -> HTMLResponse:
        return await error_page(request, 403, "error.forbidden")

    @app.exception_handler(CsrfRefused)
    async def csrf_refused(request: Request, _: CsrfRefused) -> HTMLResponse:
        return await error_page(request, 403, "error.csrf")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> HTMLResponse:
        key = "error.not_found" if exc.status_code == 404 else "error.title"
        return await error_page(request, exc.status_code, key)

    @app.exception_handler(DomainError)
    async def refused(request: Request, exc: DomainError) -> HTMLResponse:
        """A refusal no form handled: a service's 404 or 403 is the page's, others are told."""
        status = getattr(exc, "status", 500)
        if status == 404:
            return await error_page(request, 404, "error.not_found")
        if status in (401,):
            return await login_required(request, LoginRequired())
        if status == 403:
            return await error_page(request, 403, "error.forbidden")
        return await error_page(request, 503 if status >= 500 else status, "error.unavailable")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> HTMLResponse:
        log.exception("unhandled_error", path=request.url.path)
        return await error_page(request, 500, "error.title")

    for router in (
        storefront.router,
        account.router,
        dashboard.router,
        catalog.router,
        group_buys.router,
        orders.router,
        money.router,
        factory.router,
    ):
        app.include_router(router)
    return app
