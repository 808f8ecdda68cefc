"""Calling a provider's HTTP API, and what its failures mean to the platform.

A provider client makes one request per call and no retries (its caller knows whether repeating
is safe). Every failure is raised as the provider's `ProviderError`: unreachable (`status`
None), refused (its status, with the provider's own reason when its body gives one), or
answered with what cannot be read. `provider_failure` then tells a refusal of what was asked
(asking again is refused again) from the provider being out of reach.
"""

from collections.abc import Callable
from typing import Any, ClassVar, Generic, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from laku.core.errors import InvalidInput, UpstreamUnavailable
from laku.core.services import service_url
from laku.core.settings import Settings

# Answered when the provider cannot serve us (our key, a timeout, our rate of calls) rather
# than because of what we asked.
_PROVIDER_SIDE_STATUSES = frozenset({401, 403, 408, 429})


class ProviderError(Exception):
    """The provider refused the request (`status` set) or could not be reached or understood
    (`status` None when nothing was answered)."""

    provider: ClassVar[str]

    def __init__(self, message: str, *, status: int | None = None):
        super().__init__(message)
        self.status = status
        self.message = message

    @property
    def refuses_the_request(self) -> bool:
        """Whether the provider refused what was asked, rather than could not serve it."""
        return (
            self.status is not None
            and self.status < 500
            and self.status not in _PROVIDER_SIDE_STATUSES
        )


def api_base_url(configured: str | None, sandbox: str, settings: Settings) -> str:
    """The provider's API at `configured` (its real one) when set, else the local `sandbox`."""
    return (configured or service_url(sandbox, settings)).rstrip("/")


Error = TypeVar("Error", bound=ProviderError)
Answer = TypeVar("Answer", bound=BaseModel)
Refused = TypeVar("Refused", bound=InvalidInput)
Unavailable = TypeVar("Unavailable", bound=UpstreamUnavailable)


class ProviderApi(Generic[Error]):
    """A provider's API at `base_url`, every failure raised as `error`: not answered 2xx, as
    `refusal` reads the answer. `defaults` (its `auth`, `headers`...) go with every request."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        base_url: str,
        *,
        error: type[Error],
        refusal: Callable[[httpx.Response], Error],
        **defaults: Any,
    ):
        self._http = http
        self._base_url = base_url
        self._error = error
        self._refusal = refusal
        self._defaults = defaults

    async def request(self, method: str, path: str, **request: Any) -> httpx.Response:
        """One request; a 2xx answer is returned."""
        url = self._base_url + path
        try:
            response = await self._http.request(method, url, **self._defaults, **request)
        except httpx.HTTPError as exc:
            raise self._error(
                f"{self._error.provider} unreachable: {method} {url}: {exc!r}"
            ) from exc
        if not response.is_success:
            raise self._refusal(response)
        return response

    async def read(
        self, method: str, path: str, shape: type[Answer], what: str, **request: Any
    ) -> Answer:
        """One request whose answer is read as `shape` (`what` names it in the error when it
        cannot be)."""
        response = await self.request(method, path, **request)
        try:
            return shape.model_validate(response.json())
        except (ValueError, ValidationError) as exc:
            raise self._error(
                f"{self._error.provider} answered {response.status_code} without a readable {what}",
                status=response.status_code,
            ) from exc


def refusal(
    response: httpx.Response,
    error: type[Error],
    read: Callable[[Any], tuple[str, dict[str, Any]]] | None = None,
) -> Error:
    """The refusal in a provider's answer: its reason and details (the error's own fields) as
    `read` finds them in the JSON body; a body that is not one, or no `read`, is told by the
    status and the body's first 200 characters."""
    status = response.status_code
    if read is not None:
        try:
            reason, details = read(response.json())
            return error(
                f"{error.provider} refused the request ({status}): {reason}",
                status=status,
                **details,
            )
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            pass
    return error(f"{error.provider} answered {status}: {response.text[:200]}", status=status)


def provider_failure(
    exc: ProviderError, *, refused: type[Refused], unavailable: type[Unavailable]
) -> Refused | Unavailable:
    """What a provider's failure means to the platform's caller: `refused` (422) when the
    provider refused what was asked, else `unavailable` (503, worth retrying in a while)."""
    if exc.refuses_the_request:
        return refused(exc.message)
    return unavailable(f"{exc.provider} could not be used: {exc.message}", retry_after=5)
