"""Web Push client: a message to one browser subscription, as RFC 8030 has an application
server send it.

The payload is encrypted for the subscription's keys (RFC 8291, `aes128gcm` of RFC 8188) by
pywebpush, and the request carries a VAPID token (RFC 8292) signed by py-vapid with the
platform's key (`LAKU_WEBPUSH_VAPID_PRIVATE_KEY`), whose public half browsers are given as
`applicationServerKey`. The push service answers 201 with the message's `Location`; 404 or 410
mean the subscription is gone for good.
"""

import base64
import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
from cryptography.hazmat.primitives import serialization
from py_vapid import Vapid02

from laku.core.settings import Settings
from laku.providers.http import ProviderApi, ProviderError, refusal

# How long a push service keeps a message for a browser that is offline (RFC 8030 TTL).
DEFAULT_TTL_SECONDS = 24 * 3600
# A VAPID token's lifetime; RFC 8292 allows at most 24 hours.
_TOKEN_SECONDS = 12 * 3600


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class PushSubscription:
    """A browser's `PushSubscription`: where to push, and its keys (base64url)."""

    endpoint: str
    p256dh: str
    auth: str


class WebPushError(ProviderError):
    """The push service refused the message (`status` set) or could not be reached."""

    provider = "Push service"


class SubscriptionGone(WebPushError):
    """404 or 410: the browser unsubscribed or the subscription expired; never push to it again."""


class WebPushClient:
    def __init__(self, http: httpx.AsyncClient, *, vapid_private_key: str, subject: str):
        # Each subscription names its own push service: the endpoint is the whole URL.
        self._push_service = ProviderApi(http, "", error=WebPushError, refusal=_refusal)
        self._vapid = Vapid02.from_string(vapid_private_key)
        self._subject = subject

    @classmethod
    def from_settings(cls, settings: Settings, http: httpx.AsyncClient) -> "WebPushClient":
        return cls(
            http,
            vapid_private_key=settings.webpush_vapid_private_key.get_secret_value(),
            subject=settings.webpush_subject,
        )

    @property
    def public_key(self) -> str:
        """The VAPID public key, base64url of the uncompressed point: what a browser's
        `pushManager.subscribe()` takes as `applicationServerKey`."""
        return b64url(
            self._vapid.public_key.public_bytes(
                serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
            )
        )

    async def send(
        self,
        subscription: PushSubscription,
        message: dict[str, Any],
        *,
        ttl: int = DEFAULT_TTL_SECONDS,
        urgency: str = "normal",
    ) -> str | None:
        """Push `message` (as JSON) to the subscription; returns the push service's message
        location. Raises SubscriptionGone (404/410) or WebPushError."""
        # Only when a push is sent: pywebpush brings aiohttp and requests (about 12 MiB) into
        # every process that imports this module.
        from pywebpush import WebPusher, WebPushException

        try:
            pusher = WebPusher(
                {
                    "endpoint": subscription.endpoint,
                    "keys": {"p256dh": subscription.p256dh, "auth": subscription.auth},
                }
            )
            body = pusher.encode(json.dumps(message).encode(), "aes128gcm")["body"]
        except (WebPushException, ValueError) as exc:
            raise WebPushError(f"The subscription's keys cannot be used: {exc}") from exc
        origin = urlsplit(subscription.endpoint)
        headers = self._vapid.sign(
            {
                "aud": f"{origin.scheme}://{origin.netloc}",
                "sub": self._subject,
                "exp": int(time.time()) + _TOKEN_SECONDS,
            }
        )
        headers |= {
            "Content-Encoding": "aes128gcm",
            "Content-Type": "application/octet-stream",
            "TTL": str(ttl),
            "Urgency": urgency,
        }
        response = await self._push_service.request(
            "POST", subscription.endpoint, content=body, headers=headers
        )
        return response.headers.get("location")


def _refusal(response: httpx.Response) -> WebPushError:
    if response.status_code in (404, 410):
        return SubscriptionGone(
            f"The subscription is gone ({response.status_code})", status=response.status_code
        )
    return refusal(response, WebPushError)
