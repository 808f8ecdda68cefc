"""Kernel behaviour every service shares, exercised on running services."""

import asyncio
import uuid

import httpx
import pytest
import structlog
from fastapi import FastAPI
from sqlalchemy import text

from laku.core.app import own_service_credential
from laku.core.db import Database, async_url
from laku.core.errors import UpstreamUnavailable, install_error_handlers
from laku.core.http import ServiceCallError, ServiceClient, new_http_client, refused_with
from laku.core.schemas import WireModel
from laku.core.security import service_credential
from laku.core.settings import Settings
from laku.testing.platform import Platform
from tests.support import assert_problem, in_process, snapshot


def _buyer_body() -> dict:
    return {"email": f"idem-{uuid.uuid4().hex[:8]}@laku.id", "password": "pass-word-1", "name": "I"}


def test_concurrent_requests_with_one_key_execute_once(platform: Platform) -> None:
    body = _buyer_body()
    key = uuid.uuid4().hex

    async def attempt(client: httpx.AsyncClient) -> httpx.Response:
        return await client.post("/api/auth/register", json=body, headers={"Idempotency-Key": key})

    async def race() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=platform.url("auth"), timeout=10) as client:
            return await asyncio.gather(*(attempt(client) for _ in range(12)))

    responses = asyncio.run(race())
    created = [r for r in responses if r.status_code == 201]
    assert created, [r.text for r in responses]
    assert {r.json()["id"] for r in created} == {created[0].json()["id"]}
    assert all(r.status_code in (201, 409) for r in responses), [r.text for r in responses]
    for refused in (r for r in responses if r.status_code == 409):
        assert refused.json()["code"] == "idempotency_in_progress"
    # A later retry gets the stored answer, not a second account and not "email taken".
    replay = platform.client("auth").post(
        "/api/auth/register", json=body, headers={"Idempotency-Key": key}
    )
    assert replay.status_code == 201
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.json()["id"] == created[0].json()["id"]


def test_duplicates_of_a_refused_request_are_refused_too(platform: Platform) -> None:
    """A refusal releases its key: a duplicate that found the key taken and then finds it gone
    runs itself and is refused the same way, never a 500."""
    body = _buyer_body()
    taken = platform.client("auth").post("/api/auth/register", json=body)
    assert taken.status_code == 201

    async def attempt(client: httpx.AsyncClient, key: str) -> httpx.Response:
        return await client.post("/api/auth/register", json=body, headers={"Idempotency-Key": key})

    async def race() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=platform.url("auth"), timeout=30) as client:
            keys = [uuid.uuid4().hex for _ in range(10)]
            return await asyncio.gather(*(attempt(client, k) for k in keys for _ in range(8)))

    responses = asyncio.run(race())
    codes = {(r.status_code, r.json()["code"]) for r in responses}
    assert codes <= {(409, "email_taken"), (409, "idempotency_in_progress")}, codes


def test_same_key_with_another_body_is_refused(platform: Platform) -> None:
    key = uuid.uuid4().hex
    auth = platform.client("auth")
    first = auth.post("/api/auth/register", json=_buyer_body(), headers={"Idempotency-Key": key})
    assert first.status_code == 201
    before = snapshot(platform, "auth")
    other = auth.post("/api/auth/register", json=_buyer_body(), headers={"Idempotency-Key": key})
    assert_problem(other, 422, "idempotency_key_reused")
    assert snapshot(platform, "auth") == before


def test_keys_are_scoped_to_the_caller(platform: Platform) -> None:
    """Another caller's key never replays someone else's response."""
    key = uuid.uuid4().hex
    first, second = platform.new_buyer(), platform.new_buyer()
    body = {
        "label": "Rumah",
        "recipientName": "Siti",
        "phone": "+6281234567890",
        "street": "Jl. Merdeka 1",
        "city": "Bandung",
        "province": "Jawa Barat",
        "postalCode": "40111",
    }
    addresses = platform.client("address")
    mine = addresses.post(
        "/api/addresses", json=body, headers={**first.headers, "Idempotency-Key": key}
    )
    theirs = addresses.post(
        "/api/addresses", json=body, headers={**second.headers, "Idempotency-Key": key}
    )
    assert mine.status_code == theirs.status_code == 201, (mine.text, theirs.text)
    assert "idempotent-replayed" not in theirs.headers
    assert mine.json()["id"] != theirs.json()["id"]


def test_a_refusal_is_not_kept_so_a_retry_is_asked_again(platform: Platform) -> None:
    key = uuid.uuid4().hex
    body = _buyer_body()
    auth = platform.client("auth")
    refused = auth.post(
        "/api/auth/register", json={**body, "password": "short"}, headers={"Idempotency-Key": key}
    )
    assert_problem(refused, 422)
    # The same key with the corrected body is not "reused": nothing was kept for the refusal.
    accepted = auth.post("/api/auth/register", json=body, headers={"Idempotency-Key": key})
    assert accepted.status_code == 201, accepted.text


def test_body_over_the_limit_is_refused_before_parsing(platform: Platform) -> None:
    before = snapshot(platform, "auth")
    huge = b'{"email": "' + b"a" * (10 * 1024 * 1024) + b'"}'
    response = platform.client("auth").post(
        "/api/auth/register", content=huge, headers={"content-type": "application/json"}
    )
    assert_problem(response, 413, "payload_too_large")
    assert snapshot(platform, "auth") == before


def test_malformed_json_is_a_problem(platform: Platform) -> None:
    response = platform.client("auth").post(
        "/api/auth/register", content=b'{"email": ', headers={"content-type": "application/json"}
    )
    body = assert_problem(response, 422, "invalid_input")
    assert body["errors"][0]["type"] == "json_invalid"


def test_unknown_route_is_a_problem(platform: Platform) -> None:
    assert_problem(platform.client("auth").get("/api/nowhere"), 404, "not_found")


@pytest.mark.parametrize("service", ["auth", "product", "factory", "address"])
def test_health_and_ready(platform: Platform, service: str) -> None:
    client = platform.client(service)
    assert client.get("/health").json() == {"status": "ok", "service": service}
    assert client.get("/ready").json() == {"status": "ready", "service": service}


def test_service_client_passes_request_id_and_service_token(platform: Platform) -> None:
    async def call() -> httpx.Response:
        async with httpx.AsyncClient() as http:
            tokens = platform.service_token_source(http, "product")
            client = ServiceClient(platform.url("auth"), http, tokens)
            structlog.contextvars.bind_contextvars(request_id="req-from-upstream")
            try:
                with pytest.raises(ServiceCallError) as refused:
                    await client.request("GET", "/api/auth/me")
                assert refused.value.status == 403  # a service token, and services have no account
                assert refused.value.code == "service_not_allowed"
                return await client.request("GET", "/health")
            finally:
                structlog.contextvars.unbind_contextvars("request_id")

    response = asyncio.run(call())
    assert response.headers["x-request-id"] == "req-from-upstream"


def test_service_client_refuses_writes_without_idempotency_key() -> None:
    async def call() -> None:
        async with httpx.AsyncClient() as http:
            await ServiceClient("http://127.0.0.1:9", http, None).request("POST", "/x", json={})

    with pytest.raises(ValueError, match="idempotency key"):
        asyncio.run(call())


def test_service_client_reports_an_unreachable_service() -> None:
    async def call() -> None:
        async with httpx.AsyncClient() as http:
            await ServiceClient("http://127.0.0.1:9", http, None).request("GET", "/health")

    with pytest.raises(UpstreamUnavailable):
        asyncio.run(call())


async def test_an_expected_refusal_is_told_apart_from_an_answer_and_other_refusals() -> None:
    async def refused(code: str) -> None:
        raise ServiceCallError(409, {"code": code, "title": "Refused"})

    async def answered() -> str:
        return "done"

    assert await refused_with(refused("payment_already_paid"), "payment_already_paid") is True
    assert await refused_with(answered(), "payment_already_paid") is False
    with pytest.raises(ServiceCallError) as other:
        await refused_with(refused("payment_in_progress"), "payment_already_paid")
    assert other.value.code == "payment_in_progress"


def test_a_service_presents_the_credential_it_was_given_else_derives_its_own() -> None:
    secret = "s" * 40
    given = Settings(service_secret=secret, service_credential="payment-credential-from-operator")
    assert own_service_credential(given, "payment") == "payment-credential-from-operator"
    derived = Settings(service_secret=secret)
    assert own_service_credential(derived, "payment") == service_credential(secret, "payment")
    assert own_service_credential(derived, "payment") != own_service_credential(derived, "order")


async def test_an_exhausted_connection_pool_answers_503_busy(database_url: str) -> None:
    """Overload is "try again" (503 with Retry-After), not an internal error."""
    db = Database(async_url(database_url), pool_size=1, max_overflow=0, pool_timeout=0.2)
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/count")
    async def count() -> int:
        async with db.sessions() as session:
            return await session.scalar(text("SELECT 1")) or 0

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://app"
    ) as client:
        async with db.engine.connect() as held:
            await held.execute(text("SELECT 1"))  # the pool's one connection stays taken
            busy = await client.get("/count")
            assert_problem(busy, 503, "service_busy")
            assert busy.headers["retry-after"] == "1"
        assert (await client.get("/count")).json() == 1  # given back: served again
    await db.dispose()


async def test_every_page_of_a_list_is_read_in_order_a_few_at_a_time() -> None:
    """`get_all_pages` reads the first page, then the rest a few at once, and returns every
    item in the list's order."""
    app = FastAPI()
    asked: list[int] = []
    open_now = 0
    most_open = 0

    @app.get("/items")
    async def items(limit: int, offset: int) -> dict:
        nonlocal open_now, most_open
        asked.append(offset)
        open_now += 1
        most_open = max(most_open, open_now)
        await asyncio.sleep(0.05)
        open_now -= 1
        names = [{"name": f"item-{n:02d}"} for n in range(offset, min(offset + limit, 23))]
        return {"items": names, "total": 23}

    class Item(WireModel):
        name: str

    with in_process(app) as served:
        async with new_http_client(5.0) as http:
            client = ServiceClient(served.url(""), http, None)
            read = await client.get_all_pages("/items", Item, page_size=5)
    assert [item.name for item in read] == [f"item-{n:02d}" for n in range(23)]
    assert sorted(asked) == [0, 5, 10, 15, 20] and asked[0] == 0
    assert 1 < most_open <= 3
