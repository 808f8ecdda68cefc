"""A Web Push service (RFC 8030) for local runs: it takes messages as a browser vendor's push
service does and keeps them, instead of waking a browser.

Like a real one it checks the VAPID token (RFC 8292: the signature with the key in `k`, `aud`
its own origin, `exp` within 24 hours), wants `TTL` and an `aes128gcm` body of at most 4096
bytes, and answers 201 with the message's `Location`. Any path `/push/{token}` is a
subscription's endpoint until `POST /sandbox/subscriptions/{token}/expire`, after which it
answers 410 Gone, as for a browser that unsubscribed. What it accepted, still encrypted, is
listed at `GET /sandbox/messages` (kept in memory, lost on restart).
"""

import base64
import json
import secrets
import time
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request, Response, status
from fastapi.responses import JSONResponse
from py_vapid import Vapid02

from laku.core.sandbox import create_sandbox_app
from laku.core.schemas import WireModel

MAX_PAYLOAD_BYTES = 4096  # RFC 8030 section 7.2: a push service must accept at least this
MAX_TOKEN_SECONDS = 24 * 3600  # RFC 8292 section 2


class ReceivedPush(WireModel):
    id: str
    token: str  # the subscription: the endpoint's last path segment
    ttl: int
    urgency: str
    content_encoding: str
    vapid_public_key: str  # `k` of the VAPID token, base64url
    vapid_subject: str  # `sub` of the VAPID token
    body: str  # the encrypted payload, base64url
    received_at: datetime


def _refusal(http_status: int, reason: str) -> JSONResponse:
    return JSONResponse({"code": http_status, "errno": 0, "error": reason}, status_code=http_status)


def _vapid_claims(authorization: str | None, origin: str) -> tuple[dict[str, Any], str] | str:
    """The token's claims and public key, or why it is refused."""
    if not authorization or not authorization.lower().startswith("vapid "):
        return "Missing VAPID authorization (RFC 8292)"
    try:
        if not Vapid02.verify(authorization):
            return "The VAPID signature does not match its key"
        parts = dict(
            part.split("=", 1) for part in authorization.split(" ", 1)[1].split(",") if "=" in part
        )
        payload = parts["t"].split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (AssertionError, KeyError, IndexError, ValueError) as exc:
        return f"Malformed VAPID authorization: {exc}"
    now = time.time()
    if claims.get("aud") != origin:
        return f"The VAPID audience must be {origin}"
    if not isinstance(claims.get("exp"), int) or not now < claims["exp"] <= now + MAX_TOKEN_SECONDS:
        return "The VAPID token has expired or lives longer than 24 hours"
    return claims, parts["k"]


def create_app() -> FastAPI:
    received: list[ReceivedPush] = []
    gone: set[str] = set()
    app = create_sandbox_app("webpush")

    @app.post("/push/{token}", tags=["push-service"])
    async def push(token: str, request: Request) -> Response:
        """RFC 8030 section 5: an application server pushes a message to a subscription."""
        if token in gone:
            return _refusal(status.HTTP_410_GONE, "The subscription has expired")
        origin = f"{request.url.scheme}://{request.url.netloc}"
        checked = _vapid_claims(request.headers.get("authorization"), origin)
        if isinstance(checked, str):
            return _refusal(status.HTTP_401_UNAUTHORIZED, checked)
        claims, public_key = checked
        ttl = request.headers.get("ttl")
        if ttl is None or not ttl.isdigit():
            return _refusal(status.HTTP_400_BAD_REQUEST, "A TTL header is required")
        encoding = request.headers.get("content-encoding", "")
        if encoding != "aes128gcm":
            return _refusal(
                status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, "Content-Encoding must be aes128gcm"
            )
        body = await request.body()
        if len(body) > MAX_PAYLOAD_BYTES:
            return _refusal(status.HTTP_413_REQUEST_ENTITY_TOO_LARGE, "Payload too large")
        message_id = secrets.token_urlsafe(16)
        received.append(
            ReceivedPush(
                id=message_id,
                token=token,
                ttl=int(ttl),
                urgency=request.headers.get("urgency", "normal"),
                content_encoding=encoding,
                vapid_public_key=public_key,
                vapid_subject=str(claims.get("sub", "")),
                body=base64.urlsafe_b64encode(body).rstrip(b"=").decode(),
                received_at=datetime.now(UTC),
            )
        )
        return Response(
            status_code=status.HTTP_201_CREATED,
            headers={"Location": f"{origin}/messages/{message_id}", "TTL": ttl},
        )

    @app.post(
        "/sandbox/subscriptions/{token}/expire",
        status_code=status.HTTP_204_NO_CONTENT,
        response_class=Response,
        tags=["sandbox"],
    )
    async def expire(token: str) -> None:
        """From now on the subscription answers 410 Gone."""
        gone.add(token)

    @app.get("/sandbox/messages", response_model=list[ReceivedPush], tags=["sandbox"])
    async def list_messages(token: str | None = None) -> list[ReceivedPush]:
        """Every message accepted since start, oldest first (`token`: one subscription's)."""
        return [m for m in received if token is None or m.token == token]

    @app.delete(
        "/sandbox/messages", status_code=status.HTTP_204_NO_CONTENT, response_class=Response
    )
    async def clear_messages() -> None:
        received.clear()

    return app
