"""Base of every service's typed client: timeouts, safe retries, service token, ids passed on."""

import asyncio
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any, Protocol, TypeVar

import httpx
import structlog
from pydantic import BaseModel
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from laku.core.batches import in_flight
from laku.core.errors import DomainError, UpstreamUnavailable
from laku.core.in_process import InProcessTransport
from laku.core.middleware import REQUEST_ID_HEADER
from laku.core.tracing import TracingTransport

Model = TypeVar("Model", bound=BaseModel)
Answer = TypeVar("Answer")

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_RETRYABLE_STATUS = frozenset({502, 503, 504})
# Refusals that say "not now" rather than "no": not authenticated (a token is renewed), the
# request timed out or came too early, too many requests.
_NOT_NOW_STATUS = frozenset({401, 408, 425, 429})
# Connections one process opens to the other services at most, all of them kept alive.
_MAX_CONNECTIONS = 100
# Pages of one list read at once.
_PAGES_IN_FLIGHT = 3

# The address of the person a front end calls the services for, sent as X-Forwarded-For: the
# services' per-address limits then count browsers, not the front end (which they trust as a
# proxy: `trusted_proxies`). Set per request by the web front end; unset, nothing is sent.
forwarded_for: ContextVar[str | None] = ContextVar("forwarded_for", default=None)


def new_http_client(timeout_seconds: float) -> httpx.AsyncClient:
    """One pooled client per process, shared by all of its service clients; every request it
    sends carries the current trace. A call to a service this process hosts is made in
    process (laku.core.in_process). Every connection it may open is kept alive: with fewer
    kept than a burst of concurrent calls opens, each call beyond them opens a connection
    and closes it after one request."""
    network = httpx.AsyncHTTPTransport(
        limits=httpx.Limits(
            max_connections=_MAX_CONNECTIONS, max_keepalive_connections=_MAX_CONNECTIONS
        )
    )
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout_seconds, connect=min(timeout_seconds, 2.0)),
        transport=TracingTransport(InProcessTransport(network)),
    )


class ServiceCallError(DomainError):
    """Another service refused a call; carries its problem `code` and status through."""

    def __init__(self, status: int, problem: dict[str, Any], retry_after: str | None = None):
        self.status = status
        self.title = problem.get("title", "Upstream error")
        self.problem = problem
        extra = {"retry_after": retry_after} if retry_after else {}
        super().__init__(problem.get("detail"), code=problem.get("code", "upstream_error"), **extra)


async def refused_with(call: Awaitable[Any], code: str) -> bool:
    """Await `call`: True when the callee refuses it with `code`, a refusal the caller expects
    and handles (what it asked for is already so, or can no longer be); False when it is
    answered. Any other refusal is raised."""
    try:
        await call
    except ServiceCallError as exc:
        if exc.code != code:
            raise
        return True
    return False


def is_retryable(exc: ServiceCallError) -> bool:
    """Whether asking again may be answered otherwise: the callee failed (5xx) or said "not
    now" (429, 408, 425, 401), or the same work is still in progress there (409 with a code
    ending `_in_progress`: `idempotency_in_progress`, `payment_in_progress`...). Any other
    refusal is final by the platform's contract: a 4xx changes nothing, so the same request
    gets the same answer."""
    if exc.status >= 500 or exc.status in _NOT_NOW_STATUS:
        return True
    return exc.status == 409 and exc.code.endswith("_in_progress")


async def until_answered(
    call: Callable[[], Awaitable[Answer]], *, attempts: int = 30, pause_seconds: float = 2.0
) -> Answer:
    """A write with an idempotency key, asked again with that key while the callee may still
    be working on an earlier attempt (timed out here, or answered `*_in_progress`, 5xx, 429):
    the key then gets the first attempt's answer. For a batch that may outlast the client's
    timeout (a close of 100,000 participants); a refusal is final at once."""
    for _ in range(attempts - 1):
        try:
            return await call()
        except ServiceCallError as exc:
            if not is_retryable(exc):
                raise
        except UpstreamUnavailable:
            pass
        await asyncio.sleep(pause_seconds)
    return await call()


class TokenSource(Protocol):
    async def token(self) -> str: ...


class ServiceTokenSource:
    """Gets a `service` role token in the service's own name from auth-service, presenting the
    service's credential (`laku.core.security.service_credential`), and renews it shortly
    before it expires."""

    RENEW_MARGIN_SECONDS = 60

    def __init__(self, http: httpx.AsyncClient, auth_url: str, service_name: str, credential: str):
        self._http = http
        self._url = f"{auth_url}/api/auth/service-token"
        self._body = {"serviceName": service_name, "credential": credential}
        self._token: str | None = None
        self._expires_at = 0.0

    async def token(self) -> str:
        if self._token is None or time.monotonic() > self._expires_at - self.RENEW_MARGIN_SECONDS:
            try:
                response = await self._http.post(self._url, json=self._body)
                response.raise_for_status()
            except httpx.HTTPError as exc:
                raise UpstreamUnavailable(
                    "Cannot obtain a service token from auth-service"
                ) from exc
            data = response.json()
            self._token = data["accessToken"]
            self._expires_at = time.monotonic() + data["expiresIn"]
        return self._token


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, httpx.TransportError):
        return True
    return isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code in _RETRYABLE_STATUS


class ServiceClient:
    """Calls one service. Retries only what is safe to repeat: reads, and writes that carry an
    `Idempotency-Key` (which every internal write must)."""

    def __init__(
        self,
        base_url: str,
        http: httpx.AsyncClient,
        tokens: TokenSource | None,
        *,
        attempts: int = 3,
    ):
        self._base_url = base_url.rstrip("/")
        self._http = http
        self._tokens = tokens
        self._attempts = attempts

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> httpx.Response:
        method = method.upper()
        if method not in _SAFE_METHODS and not idempotency_key:
            raise ValueError(f"{method} {path}: internal writes must carry an idempotency key")
        headers: dict[str, str] = {}
        request_id = structlog.contextvars.get_contextvars().get("request_id")
        if request_id:
            headers[REQUEST_ID_HEADER] = request_id
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        if self._tokens is not None:
            headers["Authorization"] = f"Bearer {await self._tokens.token()}"
        if client_address := forwarded_for.get():
            headers["X-Forwarded-For"] = client_address

        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(self._attempts),
                wait=wait_random_exponential(multiplier=0.05, max=1.0),
                retry=retry_if_exception(_retryable),
                reraise=True,
            ):
                with attempt:
                    response = await self._http.request(
                        method, self._base_url + path, json=json, params=params, headers=headers
                    )
                    if response.status_code in _RETRYABLE_STATUS:
                        response.raise_for_status()
        except httpx.TransportError as exc:
            raise UpstreamUnavailable(f"{method} {self._base_url}{path}: {exc!r}") from exc
        except httpx.HTTPStatusError as exc:
            raise UpstreamUnavailable(
                f"{method} {self._base_url}{path} answered {exc.response.status_code}"
            ) from exc
        if response.status_code >= 400:
            try:
                problem = response.json()
            except ValueError:
                problem = {"detail": response.text[:200]}
            raise ServiceCallError(
                response.status_code, problem, response.headers.get("retry-after")
            )
        return response

    async def get_or_none(
        self, path: str, model: type[Model], *, params: dict[str, Any] | None = None
    ) -> Model | None:
        """GET one resource as `model`, or None when the service answers 404; other errors raise."""
        try:
            response = await self.request("GET", path, params=params)
        except ServiceCallError as exc:
            if exc.status == 404:
                return None
            raise
        return model.model_validate(response.json())

    async def get_model(
        self, path: str, answer_type: type[Model], *, params: dict[str, Any] | None = None
    ) -> Model:
        """GET one resource as `answer_type`."""
        response = await self.request("GET", path, params=params)
        return answer_type.model_validate(response.json())

    async def get_list(
        self, path: str, item_type: type[Model], *, params: dict[str, Any] | None = None
    ) -> list[Model]:
        """GET a JSON list, each item as `item_type`."""
        response = await self.request("GET", path, params=params)
        return [item_type.model_validate(item) for item in response.json()]

    async def get_all_pages(
        self,
        path: str,
        item_type: type[Model],
        *,
        page_size: int,
        params: dict[str, Any] | None = None,
    ) -> list[Model]:
        """Every item of a paged list (`items` and `total`, read by `limit` and `offset`): the
        first page, then the rest `_PAGES_IN_FLIGHT` at a time (a closed group buy's 100,000
        participants are 20 pages, each costing the callee more to encode than to read)."""

        async def page_at(offset: int) -> int:
            page_params = {**(params or {}), "limit": page_size, "offset": offset}
            page = (await self.request("GET", path, params=page_params)).json()
            pages[offset] = [item_type.model_validate(item) for item in page["items"]]
            return page["total"]

        pages: dict[int, list[Model]] = {}
        total = await page_at(0)
        await in_flight(
            (
                lambda offset=offset: page_at(offset)
                for offset in range(page_size, total, page_size)
            ),
            _PAGES_IN_FLIGHT,
        )
        return [item for offset in sorted(pages) for item in pages[offset]]

    async def post_model(
        self,
        path: str,
        body: BaseModel | None,
        answer_type: type[Model],
        *,
        idempotency_key: str,
        exclude_none: bool = False,
    ) -> Model:
        """POST `body` (a wire model, sent by its aliases, unset optional fields left out with
        `exclude_none`; None sends no body), made once per `idempotency_key`, and read the
        answer as `answer_type`."""
        json = (
            None
            if body is None
            else body.model_dump(mode="json", by_alias=True, exclude_none=exclude_none)
        )
        response = await self.request("POST", path, json=json, idempotency_key=idempotency_key)
        return answer_type.model_validate(response.json())
