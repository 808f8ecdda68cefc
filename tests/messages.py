"""What buyers and factories are told, as the provider sandboxes received it: WhatsApp messages,
emails, and Web Push messages a browser subscribed with its own keys decrypts."""

import json
import os
import random
import uuid
from typing import Any

import http_ece
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from laku.providers.webpush.client import b64url, b64url_decode
from laku.testing.platform import Account, Platform


def new_phone() -> str:
    return f"+62812{random.randrange(10**7, 10**8)}"


def whatsapp_messages_to(platform: Platform, to: str) -> list[dict[str, Any]]:
    response = platform.client("whatsapp-sandbox").get("/sandbox/messages")
    response.raise_for_status()
    return [m for m in response.json() if m["to"] == to]


def emails_to(platform: Platform, to: str) -> list[dict[str, Any]]:
    response = platform.client("smtp-sandbox").get("/sandbox/emails")
    response.raise_for_status()
    return [m for m in response.json() if to in m["to"]]


PUSH_SUBSCRIPTIONS = "/api/notifications/push-subscriptions"


class PushBrowser:
    """A browser's side of a subscription: its P-256 key pair and authentication secret."""

    def __init__(self, platform: Platform):
        self.token = uuid.uuid4().hex
        self.endpoint = f"{platform.url('push-sandbox')}/push/{self.token}"
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.auth = os.urandom(16)

    def subscription(self) -> dict[str, Any]:
        """What `PushSubscription.toJSON()` gives."""
        public = self.key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return {
            "endpoint": self.endpoint,
            "expirationTime": None,
            "keys": {"p256dh": b64url(public), "auth": b64url(self.auth)},
        }

    def decrypt(self, pushed: dict[str, Any]) -> dict[str, Any]:
        plain = http_ece.decrypt(
            b64url_decode(pushed["body"]),
            private_key=self.key,
            auth_secret=self.auth,
            version="aes128gcm",
        )
        return json.loads(plain)


def pushes_received(platform: Platform, browser: PushBrowser) -> list[dict[str, Any]]:
    response = platform.client("push-sandbox").get(
        "/sandbox/messages", params={"token": browser.token}
    )
    assert response.status_code == 200, response.text
    return response.json()


def notify_buyer(platform: Platform, buyer: Account, key: str, subject: str, text: str) -> None:
    response = platform.client("notification").post(
        "/api/notifications/users",
        json={"items": [{"userId": buyer.id, "key": key, "subject": subject, "text": text}]},
        headers=platform.service_headers("order"),  # as order-service tells its buyers
    )
    assert response.status_code == 202, response.text


def push_subscriptions(platform: Platform, buyer: Account) -> list[dict[str, Any]]:
    response = platform.client("notification").get(
        f"{PUSH_SUBSCRIPTIONS}/me", headers=buyer.headers
    )
    assert response.status_code == 200, response.text
    return response.json()
