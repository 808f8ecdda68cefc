import asyncio
import uuid

import httpx
import jwt
import pytest

from laku.factory.client import FactoryClient
from laku.factory.rules import VerificationStatus
from laku.testing.platform import Platform, bearer
from tests.support import admin_headers, assert_problem, snapshot


@pytest.fixture
def buyer_headers(platform: Platform) -> dict[str, str]:
    return platform.new_buyer().headers


def _factory_body(**overrides: object) -> dict:
    body = {
        "name": f"Konveksi Maju {uuid.uuid4().hex[:8]}",
        "ownerName": "Budi Santoso",
        "phone": "+6281234567890",
        "email": "pabrik@maju.id",
        "address": "Jl. Industri No. 5",
        "city": "Bandung",
        "postalCode": "40123",
    }
    return {**body, **overrides}


def _create_factory(platform: Platform, **overrides: object) -> dict:
    response = platform.client("factory").post(
        "/api/factories", json=_factory_body(**overrides), headers=admin_headers(platform)
    )
    assert response.status_code == 201, response.text
    return response.json()


def _verify(platform: Platform, factory_id: str, body: dict) -> httpx.Response:
    return platform.client("factory").patch(
        f"/api/factories/{factory_id}/verification", json=body, headers=admin_headers(platform)
    )


def _review(platform: Platform, factory_id: str, headers: dict, body: dict) -> httpx.Response:
    return platform.client("factory").post(
        f"/api/factories/{factory_id}/reviews", json=body, headers=headers
    )


def test_create_then_get_a_factory(platform: Platform) -> None:
    body = _factory_body()
    created = platform.client("factory").post(
        "/api/factories", json=body, headers=admin_headers(platform)
    )
    assert created.status_code == 201, created.text
    factory = created.json()
    assert {key: factory[key] for key in body} == body
    assert factory["verificationStatus"] == "pending"
    assert factory["verificationReason"] is None
    assert factory["verifiedAt"] is None
    assert factory["averageRating"] is None
    assert factory["reviewCount"] == 0

    fetched = platform.client("factory").get(f"/api/factories/{factory['id']}")
    assert fetched.status_code == 200
    assert fetched.json() == factory


def test_optional_contact_fields_may_be_left_out(platform: Platform) -> None:
    body = _factory_body()
    del body["email"], body["city"]
    created = platform.client("factory").post(
        "/api/factories", json=body, headers=admin_headers(platform)
    )
    assert created.status_code == 201, created.text
    assert created.json()["email"] is None
    assert created.json()["city"] is None


def test_unknown_factory_is_not_found_everywhere(platform: Platform, buyer_headers: dict) -> None:
    factory = platform.client("factory")
    missing = f"/api/factories/{uuid.uuid4()}"
    before = snapshot(platform, "factory", "auth")
    assert_problem(factory.get(missing), 404, "factory_not_found")
    assert_problem(factory.get(f"{missing}/reviews"), 404, "factory_not_found")
    assert_problem(
        factory.patch(missing, json={"city": "Solo"}, headers=admin_headers(platform)),
        404,
        "factory_not_found",
    )
    assert_problem(
        factory.patch(
            f"{missing}/verification", json={"status": "verified"}, headers=admin_headers(platform)
        ),
        404,
        "factory_not_found",
    )
    assert_problem(
        factory.post(f"{missing}/reviews", json={"rating": 5}, headers=buyer_headers),
        404,
        "factory_not_found",
    )
    account = {"email": f"x-{uuid.uuid4().hex[:8]}@laku.id", "password": "a-password", "name": "X"}
    assert_problem(
        factory.post(f"{missing}/users", json=account, headers=admin_headers(platform)),
        404,
        "factory_not_found",
    )
    assert snapshot(platform, "factory", "auth") == before


def test_list_filters_by_status_and_searches_by_name(platform: Platform) -> None:
    marker = uuid.uuid4().hex[:8]
    first = _create_factory(platform, name=f"Tekstil {marker} Satu")
    _create_factory(platform, name=f"tekstil {marker.upper()} Dua")
    _create_factory(platform, name=f"Garmen {marker} Tiga")
    assert _verify(platform, first["id"], {"status": "verified"}).status_code == 200
    factories = platform.client("factory")

    everything = factories.get("/api/factories", params={"q": marker}).json()
    assert everything["total"] == 3
    assert {item["name"].split()[0].lower() for item in everything["items"]} == {
        "tekstil",
        "garmen",
    }

    # The search is case-insensitive and matches anywhere in the name.
    textiles = factories.get("/api/factories", params={"q": f"TEKSTIL {marker}"}).json()
    assert textiles["total"] == 2

    verified = factories.get(
        "/api/factories", params={"q": marker, "verificationStatus": "verified"}
    ).json()
    assert [item["id"] for item in verified["items"]] == [first["id"]]
    pending = factories.get(
        "/api/factories", params={"q": marker, "verificationStatus": "pending"}
    ).json()
    assert pending["total"] == 2

    # LIKE wildcards in the search are literal characters, not patterns.
    assert factories.get("/api/factories", params={"q": f"{marker}%"}).json()["total"] == 0
    assert factories.get("/api/factories", params={"q": "_" * 8}).json()["total"] == 0


def test_list_is_paginated(platform: Platform) -> None:
    marker = uuid.uuid4().hex[:8]
    ids = {_create_factory(platform, name=f"Pabrik {marker} {n}")["id"] for n in range(3)}
    factories = platform.client("factory")
    first = factories.get("/api/factories", params={"q": marker, "limit": 2}).json()
    second = factories.get("/api/factories", params={"q": marker, "limit": 2, "offset": 2}).json()
    assert (first["total"], first["limit"], first["offset"]) == (3, 2, 0)
    assert len(first["items"]) == 2
    assert len(second["items"]) == 1
    assert {item["id"] for item in first["items"] + second["items"]} == ids

    for bad in ({"limit": 0}, {"limit": 101}, {"offset": -1}, {"verificationStatus": "done"}):
        assert_problem(factories.get("/api/factories", params=bad), 422)


def test_partial_update_changes_only_the_fields_sent(platform: Platform) -> None:
    factory = _create_factory(platform)
    updated = platform.client("factory").patch(
        f"/api/factories/{factory['id']}",
        json={"phone": "081298765432", "city": None, "postalCode": "12190"},
        headers=admin_headers(platform),
    )
    assert updated.status_code == 200, updated.text
    after = updated.json()
    assert (after["phone"], after["city"], after["postalCode"]) == ("081298765432", None, "12190")
    unchanged = ("name", "ownerName", "email", "address", "verificationStatus", "createdAt")
    assert {key: after[key] for key in unchanged} == {key: factory[key] for key in unchanged}
    assert after["updatedAt"] > factory["updatedAt"]
    assert platform.client("factory").get(f"/api/factories/{factory['id']}").json() == after


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"name": None},
        {"phone": "not-a-phone"},
        {"postalCode": "4012"},
        {"email": "nope"},
        {"verificationStatus": "verified"},
    ],
    ids=["empty", "null-name", "bad-phone", "bad-postal-code", "bad-email", "status-not-here"],
)
def test_invalid_update_changes_nothing(platform: Platform, body: dict) -> None:
    factory = _create_factory(platform)
    before = snapshot(platform, "factory")
    response = platform.client("factory").patch(
        f"/api/factories/{factory['id']}", json=body, headers=admin_headers(platform)
    )
    assert_problem(response, 422, "invalid_input")
    assert snapshot(platform, "factory") == before


def test_verification_transitions(platform: Platform) -> None:
    factory = _create_factory(platform)
    path = f"/api/factories/{factory['id']}"

    verified = _verify(platform, factory["id"], {"status": "verified"})
    assert verified.status_code == 200, verified.text
    assert verified.json()["verificationStatus"] == "verified"
    verified_at = verified.json()["verifiedAt"]
    assert verified_at is not None

    # Saying "verified" again keeps the moment it was first verified.
    again = _verify(platform, factory["id"], {"status": "verified"})
    assert again.json()["verifiedAt"] == verified_at

    before = snapshot(platform, "factory")
    assert_problem(_verify(platform, factory["id"], {"status": "rejected"}), 422)
    assert_problem(_verify(platform, factory["id"], {"status": "rejected", "reason": ""}), 422)
    assert_problem(_verify(platform, factory["id"], {"status": "approved"}), 422)
    assert snapshot(platform, "factory") == before

    rejected = _verify(platform, factory["id"], {"status": "rejected", "reason": "NPWP invalid"})
    assert rejected.status_code == 200, rejected.text
    assert rejected.json()["verificationStatus"] == "rejected"
    assert rejected.json()["verificationReason"] == "NPWP invalid"
    assert rejected.json()["verifiedAt"] is None

    resubmitted = _verify(platform, factory["id"], {"status": "pending"})
    assert resubmitted.json()["verificationStatus"] == "pending"
    assert resubmitted.json()["verificationReason"] is None
    assert platform.client("factory").get(path).json() == resubmitted.json()


def test_buyers_review_a_factory_and_see_the_average(platform: Platform) -> None:
    factory = _create_factory(platform)
    first, second = platform.new_buyer("Ani"), platform.new_buyer("Dewi")

    created = _review(platform, factory["id"], first.headers, {"rating": 5, "comment": "Rapi"})
    assert created.status_code == 201, created.text
    review = created.json()
    assert (review["factoryId"], review["userId"]) == (factory["id"], first.id)
    assert (review["rating"], review["comment"]) == (5, "Rapi")
    assert _review(platform, factory["id"], second.headers, {"rating": 4}).status_code == 201

    after = platform.client("factory").get(f"/api/factories/{factory['id']}").json()
    assert (after["averageRating"], after["reviewCount"]) == (4.5, 2)

    listed = platform.client("factory").get(f"/api/factories/{factory['id']}/reviews").json()
    assert listed["total"] == 2
    assert {item["userId"] for item in listed["items"]} == {first.id, second.id}
    one = platform.client("factory").get(
        f"/api/factories/{factory['id']}/reviews", params={"limit": 1, "offset": 1}
    )
    assert (len(one.json()["items"]), one.json()["total"]) == (1, 2)


def test_average_is_rounded_to_two_decimals(platform: Platform) -> None:
    factory = _create_factory(platform)
    for rating in (5, 5, 4):
        reviewed = _review(
            platform, factory["id"], platform.new_buyer().headers, {"rating": rating}
        )
        assert reviewed.status_code == 201, reviewed.text
    after = platform.client("factory").get(f"/api/factories/{factory['id']}").json()
    assert after["averageRating"] == 4.67
    listed = platform.client("factory").get("/api/factories", params={"q": factory["name"]})
    assert listed.json()["items"][0]["averageRating"] == 4.67


def test_one_review_per_buyer_and_factory(platform: Platform, buyer_headers: dict) -> None:
    factory = _create_factory(platform)
    assert _review(platform, factory["id"], buyer_headers, {"rating": 3}).status_code == 201
    before = snapshot(platform, "factory")
    assert_problem(
        _review(platform, factory["id"], buyer_headers, {"rating": 5}), 409, "review_exists"
    )
    assert snapshot(platform, "factory") == before
    # The same buyer may still review another factory.
    other = _create_factory(platform)
    assert _review(platform, other["id"], buyer_headers, {"rating": 5}).status_code == 201


@pytest.mark.parametrize(
    "body",
    [{"rating": 0}, {"rating": 6}, {"rating": "5"}, {"rating": 4.5}, {}, {"rating": 4, "x": 1}],
    ids=["zero", "six", "string", "fraction", "missing", "unknown-field"],
)
def test_invalid_review_changes_nothing(
    platform: Platform, buyer_headers: dict, body: dict
) -> None:
    factory = _create_factory(platform)
    before = snapshot(platform, "factory")
    assert_problem(_review(platform, factory["id"], buyer_headers, body), 422, "invalid_input")
    assert snapshot(platform, "factory") == before


def test_only_buyers_review(platform: Platform) -> None:
    factory = _create_factory(platform)
    before = snapshot(platform, "factory")
    assert_problem(_review(platform, factory["id"], {}, {"rating": 5}), 401)
    assert_problem(_review(platform, factory["id"], admin_headers(platform), {"rating": 5}), 403)
    assert snapshot(platform, "factory") == before


def _account_body(**overrides: object) -> dict:
    body = {
        "email": f"staff-{uuid.uuid4().hex[:8]}@pabrik.id",
        "password": "factory-password",
        "name": "Rina (gudang)",
        "phone": "+6285700001111",
    }
    return {**body, **overrides}


def test_factory_account_logs_in_and_sees_its_factory(platform: Platform) -> None:
    factory = _create_factory(platform)
    body = _account_body()
    created = platform.client("factory").post(
        f"/api/factories/{factory['id']}/users", json=body, headers=admin_headers(platform)
    )
    assert created.status_code == 201, created.text
    account = created.json()
    assert (account["role"], account["factoryId"], account["email"]) == (
        "factory",
        factory["id"],
        body["email"],
    )

    token = platform.login(body["email"], body["password"])
    claims = jwt.decode(token, options={"verify_signature": False})
    assert (claims["role"], claims["factoryId"], claims["sub"]) == (
        "factory",
        factory["id"],
        account["id"],
    )
    mine = platform.client("factory").get("/api/factories/me", headers=bearer(token))
    assert mine.status_code == 200, mine.text
    assert mine.json() == platform.client("factory").get(f"/api/factories/{factory['id']}").json()


def test_retrying_account_creation_makes_one_account(platform: Platform) -> None:
    factory = _create_factory(platform)
    body = _account_body()
    path = f"/api/factories/{factory['id']}/users"
    first = platform.client("factory").post(path, json=body, headers=admin_headers(platform))
    assert first.status_code == 201, first.text
    before = snapshot(platform, "auth")
    retried = platform.client("factory").post(path, json=body, headers=admin_headers(platform))
    assert retried.status_code == 201, retried.text
    assert retried.json() == first.json()
    assert snapshot(platform, "auth") == before

    # Another request for an e-mail that already has an account is refused.
    other_password = {**body, "password": "another-password"}
    assert_problem(
        platform.client("factory").post(path, json=other_password, headers=admin_headers(platform)),
        409,
        "email_taken",
    )
    assert snapshot(platform, "auth") == before


def test_account_for_an_email_already_taken_is_a_conflict(platform: Platform) -> None:
    factory = _create_factory(platform)
    buyer = platform.new_buyer()
    before = snapshot(platform, "auth", "factory")
    response = platform.client("factory").post(
        f"/api/factories/{factory['id']}/users",
        json=_account_body(email=buyer.email),
        headers=admin_headers(platform),
    )
    assert_problem(response, 409, "email_taken")
    assert snapshot(platform, "auth", "factory") == before


@pytest.mark.parametrize(
    "overrides",
    [{"password": "short"}, {"email": "not-an-email"}, {"phone": "12"}, {"role": "admin"}],
    ids=["short-password", "bad-email", "bad-phone", "role-not-settable"],
)
def test_invalid_account_request_changes_nothing(platform: Platform, overrides: dict) -> None:
    factory = _create_factory(platform)
    before = snapshot(platform, "auth", "factory")
    response = platform.client("factory").post(
        f"/api/factories/{factory['id']}/users",
        json=_account_body(**overrides),
        headers=admin_headers(platform),
    )
    assert_problem(response, 422, "invalid_input")
    assert snapshot(platform, "auth", "factory") == before


def test_my_factory_is_for_factory_accounts_only(platform: Platform, buyer_headers: dict) -> None:
    factories = platform.client("factory")
    assert_problem(factories.get("/api/factories/me"), 401)
    assert_problem(factories.get("/api/factories/me", headers=buyer_headers), 403)
    assert_problem(factories.get("/api/factories/me", headers=admin_headers(platform)), 403)


def _admin_requests(factory_id: str) -> list[tuple[str, str, dict]]:
    return [
        ("POST", "/api/factories", _factory_body()),
        ("PATCH", f"/api/factories/{factory_id}", {"city": "Solo"}),
        ("PATCH", f"/api/factories/{factory_id}/verification", {"status": "verified"}),
        ("POST", f"/api/factories/{factory_id}/users", _account_body()),
    ]


def test_admin_endpoints_refuse_others(platform: Platform, buyer_headers: dict) -> None:
    factory = _create_factory(platform)
    before = snapshot(platform, "factory", "auth")
    for method, path, body in _admin_requests(factory["id"]):
        client = platform.client("factory")
        assert_problem(client.request(method, path, json=body), 401)
        assert_problem(client.request(method, path, json=body, headers=bearer("bad.token")), 401)
        assert_problem(client.request(method, path, json=body, headers=buyer_headers), 403)
    assert snapshot(platform, "factory", "auth") == before


@pytest.mark.parametrize(
    "body",
    [
        _factory_body(name=None),
        {key: value for key, value in _factory_body().items() if key != "phone"},
        _factory_body(phone=6281234567890),
        _factory_body(phone="+62 812-3456"),
        _factory_body(postalCode="4012"),
        _factory_body(postalCode="401234"),
        _factory_body(postalCode="4O123"),
        _factory_body(postalCode=40123),
        _factory_body(email="not-an-email"),
        _factory_body(name=""),
        _factory_body(verificationStatus="verified"),
        [],
    ],
    ids=[
        "null-name",
        "missing-phone",
        "phone-as-number",
        "phone-with-punctuation",
        "postal-code-short",
        "postal-code-long",
        "postal-code-letter",
        "postal-code-as-number",
        "bad-email",
        "empty-name",
        "status-not-settable",
        "not-an-object",
    ],
)
def test_invalid_factory_changes_nothing(platform: Platform, body: object) -> None:
    before = snapshot(platform, "factory")
    response = platform.client("factory").post(
        "/api/factories", json=body, headers=admin_headers(platform)
    )
    assert_problem(response, 422, "invalid_input")
    assert snapshot(platform, "factory") == before


def test_malformed_json_changes_nothing(platform: Platform) -> None:
    factory = _create_factory(platform)
    before = snapshot(platform, "factory")
    headers = {**admin_headers(platform), "Content-Type": "application/json"}
    for method, path in [
        ("POST", "/api/factories"),
        ("PATCH", f"/api/factories/{factory['id']}"),
        ("PATCH", f"/api/factories/{factory['id']}/verification"),
    ]:
        response = platform.client("factory").request(
            method, path, content=b'{"name": "Kain', headers=headers
        )
        assert_problem(response, 422, "invalid_input")
    assert snapshot(platform, "factory") == before


def test_a_malformed_id_is_refused(platform: Platform) -> None:
    assert_problem(platform.client("factory").get("/api/factories/not-a-uuid"), 422)


def test_idempotency_key_replays_the_first_creation(platform: Platform) -> None:
    body = _factory_body()
    headers = {**admin_headers(platform), "Idempotency-Key": uuid.uuid4().hex}
    factories = platform.client("factory")
    first = factories.post("/api/factories", json=body, headers=headers)
    assert first.status_code == 201, first.text
    replayed = factories.post("/api/factories", json=body, headers=headers)
    assert replayed.status_code == 201
    assert replayed.headers["idempotent-replayed"] == "true"
    assert replayed.json() == first.json()
    assert factories.get("/api/factories", params={"q": body["name"]}).json()["total"] == 1

    before = snapshot(platform, "factory")
    reused = factories.post("/api/factories", json={**body, "city": "Surabaya"}, headers=headers)
    assert_problem(reused, 422, "idempotency_key_reused")
    assert snapshot(platform, "factory") == before


def test_client_reads_factories_for_other_services(platform: Platform) -> None:
    factory = _create_factory(platform)

    async def read() -> tuple:
        async with httpx.AsyncClient() as http:
            client = FactoryClient(platform.url("factory"), http, None)
            return (
                await client.get_factory(uuid.UUID(factory["id"])),
                await client.get_factory(uuid.uuid4()),
            )

    found, missing = asyncio.run(read())
    assert found is not None
    assert (found.id, found.name) == (uuid.UUID(factory["id"]), factory["name"])
    assert found.verification_status is VerificationStatus.PENDING
    assert missing is None


_OPERATIONS = {
    ("post", "/api/factories"),
    ("get", "/api/factories"),
    ("get", "/api/factories/me"),
    ("get", "/api/factories/{factory_id}"),
    ("patch", "/api/factories/{factory_id}"),
    ("patch", "/api/factories/{factory_id}/verification"),
    ("post", "/api/factories/{factory_id}/reviews"),
    ("get", "/api/factories/{factory_id}/reviews"),
    ("post", "/api/factories/{factory_id}/users"),
}


def test_every_endpoint_is_documented(platform: Platform) -> None:
    paths = platform.client("factory").get("/openapi.json").json()["paths"]
    documented = {
        (method, path)
        for path, operations in paths.items()
        for method in operations
        if path.startswith("/api/")
    }
    assert documented == _OPERATIONS
    for method, path in _OPERATIONS:
        operation = paths[path][method]
        success = next(r for code, r in operation["responses"].items() if code.startswith("2"))
        assert success["content"]["application/json"]["schema"], (method, path)
        if method != "get":
            assert operation["requestBody"]["content"]["application/json"]["schema"]
