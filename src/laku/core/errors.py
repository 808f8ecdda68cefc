"""RFC 9457 problem details: every error the platform returns has this shape."""

from typing import Any

import sqlalchemy.exc
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

PROBLEM_CONTENT_TYPE = "application/problem+json"

log = structlog.get_logger()


class Problem(BaseModel):
    """The wire shape of an error (RFC 9457) with a stable machine-readable `code`."""

    type: str = "about:blank"
    title: str
    status: int
    code: str
    detail: str | None = None
    instance: str | None = None
    errors: list[dict[str, Any]] | None = None


class DomainError(Exception):
    """An error raised by service logic; `status` and `code` are what clients see."""

    status = 400
    code = "bad_request"
    title = "Bad request"

    def __init__(self, detail: str | None = None, *, code: str | None = None, **extra: Any):
        super().__init__(detail or self.title)
        self.detail = detail
        if code:
            self.code = code
        self.extra = extra


class InvalidInput(DomainError):
    status, code, title = 422, "invalid_input", "Invalid input"


class Unauthorized(DomainError):
    status, code, title = 401, "unauthorized", "Authentication required"


class Forbidden(DomainError):
    status, code, title = 403, "forbidden", "Not allowed"


class NotFound(DomainError):
    status, code, title = 404, "not_found", "Not found"


class Conflict(DomainError):
    status, code, title = 409, "conflict", "Conflict"


class PayloadTooLarge(DomainError):
    status, code, title = 413, "payload_too_large", "Request body too large"


class TooManyRequests(DomainError):
    status, code, title = 429, "too_many_requests", "Too many requests"


class UpstreamUnavailable(DomainError):
    status, code, title = 503, "upstream_unavailable", "A service this request needs is unavailable"


# The errors documented on every route (PROBLEM_RESPONSES), in status order.
_EVERY_ROUTES_ERRORS = (
    DomainError,
    Unauthorized,
    Forbidden,
    NotFound,
    Conflict,
    PayloadTooLarge,
    InvalidInput,
)
# The code and title of an HTTP error raised outside the platform's errors (routing's 404 and
# 405, an unsupported media type...): those of the platform's error of its status.
_HTTP_PROBLEMS: dict[int, tuple[str, str]] = {
    error.status: (error.code, error.title) for error in (*_EVERY_ROUTES_ERRORS, TooManyRequests)
} | {
    405: ("method_not_allowed", "Method not allowed"),
    415: ("unsupported_media_type", "Unsupported media type"),
}


def problem_response(
    status: int,
    code: str,
    title: str,
    detail: str | None = None,
    *,
    instance: str | None = None,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = Problem(
        title=title, status=status, code=code, detail=detail, instance=instance, errors=errors
    )
    return JSONResponse(
        body.model_dump(exclude_none=True),
        status_code=status,
        media_type=PROBLEM_CONTENT_TYPE,
        headers=headers,
    )


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    return [
        {"loc": list(err.get("loc", ())), "msg": err.get("msg", ""), "type": err.get("type", "")}
        for err in exc.errors()
    ]


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def _domain(request: Request, exc: DomainError) -> JSONResponse:
        headers = (
            {"Retry-After": str(exc.extra["retry_after"])} if "retry_after" in exc.extra else None
        )
        return problem_response(
            exc.status, exc.code, exc.title, exc.detail, instance=request.url.path, headers=headers
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return problem_response(
            InvalidInput.status,
            InvalidInput.code,
            InvalidInput.title,
            "The request does not match the expected schema.",
            instance=request.url.path,
            errors=_validation_errors(exc),
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        status = exc.status_code
        code, title = _HTTP_PROBLEMS.get(status, ("error", "Error"))
        return problem_response(
            status,
            code,
            title,
            exc.detail if isinstance(exc.detail, str) else None,
            instance=request.url.path,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(sqlalchemy.exc.TimeoutError)
    async def _busy(request: Request, exc: sqlalchemy.exc.TimeoutError) -> JSONResponse:
        # Every pooled connection stayed taken for the pool's whole timeout: overloaded, not
        # broken. The caller may ask again (a service client does; writes carry their keys).
        log.warning("database_pool_exhausted", path=request.url.path)
        return problem_response(
            503,
            "service_busy",
            "The service is busy",
            "Every database connection is in use; try again shortly.",
            instance=request.url.path,
            headers={"Retry-After": "1"},
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled_error", path=request.url.path)
        return problem_response(500, "internal_error", "Internal error", instance=request.url.path)


# Documented on every route so each endpoint's error shape is in its OpenAPI, under the media
# type errors are sent as (inline: a Problem nests no other model).
_PROBLEM_SCHEMA = Problem.model_json_schema()


def problem_doc(description: str) -> dict[str, Any]:
    """An error response as OpenAPI documents it: a Problem, as application/problem+json."""
    return {
        "content": {PROBLEM_CONTENT_TYPE: {"schema": _PROBLEM_SCHEMA}},
        "description": description,
    }


PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    error.status: problem_doc(error.title) for error in _EVERY_ROUTES_ERRORS
}
