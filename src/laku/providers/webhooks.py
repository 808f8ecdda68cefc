"""Admitting a provider's webhooks. Providers sign nothing: a webhook is known by the shared
secret it carries in a header, compared in constant time so that it cannot be guessed byte by
byte from response times."""

import hmac
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Header, Request
from pydantic import SecretStr

from laku.core.errors import Unauthorized
from laku.core.security import PROVIDER_WEBHOOK, declares_access
from laku.core.settings import Settings


def secret_matches(received: str | None, secret: SecretStr) -> bool:
    return received is not None and hmac.compare_digest(
        received.encode(), secret.get_secret_value().encode()
    )


def provider_webhook(
    header: str, verify: Callable[[Settings, str | None], bool], code: str
) -> Callable[..., Awaitable[None]]:
    """The access rule of a provider's webhook: 401 `code` unless `verify` admits the value of
    `header`."""

    @declares_access(PROVIDER_WEBHOOK)
    async def admit(
        request: Request, received: Annotated[str | None, Header(alias=header)] = None
    ) -> None:
        if not verify(request.app.state.settings, received):
            raise Unauthorized(f"Missing or wrong {header}", code=code)

    return admit
