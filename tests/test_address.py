import asyncio
import uuid
from typing import Any

import asyncpg
import httpx
import pytest

from laku.address.client import AddressClient
from laku.core.http import new_http_client
from laku.testing.database import plain_url
from laku.testing.platform import Account, Platform, bearer
from tests.support import assert_problem, snapshot

ADDRESSES = "/api/addresses"


def _body(**overrides: Any) -> dict[str, Any]:
    return {
        "label": "Rumah",
        "recipientName": "Siti Aminah",
        "phone": "+6281234567890",
        "street": "Jl. Melati No. 5, RT 03/RW 07",
        "city": "Jakarta Selatan",
        "province": "DKI Jakarta",
        "postalCode": "12190",
        **overrides,
    }


def _create(platform: Platform, buyer: Account, **overrides: Any) -> dict[str, Any]:
    response = platform.client("address").post(
        ADDRESSES, json=_body(**overrides), headers=buyer.headers
    )
    assert response.status_code == 201, response.text
    return response.json()


def _list(platform: Platform, buyer: Account) -> list[dict[str, Any]]:
    response = platform.client("address").get(ADDRESSES, headers=buyer.headers)
    assert response.status_code == 200, response.text
    return response.json()


def _default_ids(platform: Platform, buyer: Account) -> list[str]:
    return [a["id"] for a in _list(platform, buyer) if a["isDefault"]]


def _service_token(platform: Platform) -> str:
    return platform.service_token("logistics")


def _factory_token(platform: Platform) -> str:
    email = f"factory-{uuid.uuid4().hex[:8]}@laku.id"
    body = {
        "email": email,
        "password": "factory-password",
        "name": "Pabrik Kaos",
        "role": "factory",
        "factoryId": str(uuid.uuid4()),
    }
    created = platform.client("auth").post(
        "/api/auth/users", json=body, headers=bearer(platform.admin_token)
    )
    created.raise_for_status()
    return platform.login(email, "factory-password")


def test_crud_round_trip_in_camel_case(platform: Platform) -> None:
    buyer = platform.new_buyer()
    api = platform.client("address")
    created = _create(platform, buyer, notes="Pagar hijau")
    assert created["userId"] == buyer.id
    assert created["recipientName"] == "Siti Aminah"
    assert created["postalCode"] == "12190"
    assert created["notes"] == "Pagar hijau"
    assert created["isDefault"] is True
    assert {"id", "createdAt", "updatedAt"} <= created.keys()
    assert not any("_" in key for key in created)

    fetched = api.get(f"{ADDRESSES}/{created['id']}", headers=buyer.headers)
    assert fetched.status_code == 200
    assert fetched.json() == created
    assert _list(platform, buyer) == [created]

    patched = api.patch(
        f"{ADDRESSES}/{created['id']}",
        json={"city": "Bandung", "postalCode": "40115", "notes": None},
        headers=buyer.headers,
    )
    assert patched.status_code == 200, patched.text
    changed = patched.json()
    assert (changed["city"], changed["postalCode"], changed["notes"]) == ("Bandung", "40115", None)
    assert changed["street"] == created["street"]  # fields not sent are kept
    assert changed["updatedAt"] > created["updatedAt"]
    assert api.get(f"{ADDRESSES}/{created['id']}", headers=buyer.headers).json() == changed

    deleted = api.delete(f"{ADDRESSES}/{created['id']}", headers=buyer.headers)
    assert deleted.status_code == 204
    assert deleted.content == b""
    gone = api.get(f"{ADDRESSES}/{created['id']}", headers=buyer.headers)
    assert_problem(gone, 404, "address_not_found")
    assert _list(platform, buyer) == []


def test_body_user_id_may_name_the_caller(platform: Platform) -> None:
    buyer = platform.new_buyer()
    assert _create(platform, buyer, userId=buyer.id)["userId"] == buyer.id


def test_first_address_is_default_and_setting_another_moves_it(platform: Platform) -> None:
    buyer = platform.new_buyer()
    api = platform.client("address")
    home = _create(platform, buyer)
    office = _create(platform, buyer, label="Kantor")
    assert office["isDefault"] is False
    assert _default_ids(platform, buyer) == [home["id"]]

    moved = api.post(f"{ADDRESSES}/{office['id']}/default", headers=buyer.headers)
    assert moved.status_code == 200
    assert moved.json()["isDefault"] is True
    assert _default_ids(platform, buyer) == [office["id"]]
    again = api.post(f"{ADDRESSES}/{office['id']}/default", headers=buyer.headers)
    assert again.json()["isDefault"] is True
    assert _default_ids(platform, buyer) == [office["id"]]

    patched = api.patch(
        f"{ADDRESSES}/{home['id']}", json={"isDefault": True}, headers=buyer.headers
    )
    assert patched.json()["isDefault"] is True
    assert _default_ids(platform, buyer) == [home["id"]]

    kos = _create(platform, buyer, label="Kos", isDefault=True)
    assert _default_ids(platform, buyer) == [kos["id"]]
    current = api.get(f"{ADDRESSES}/default", headers=buyer.headers)
    assert current.status_code == 200
    assert current.json()["id"] == kos["id"]
    # Default first, then newest first.
    assert [a["id"] for a in _list(platform, buyer)] == [kos["id"], office["id"], home["id"]]


def test_deleting_the_default_promotes_the_newest_remaining(platform: Platform) -> None:
    buyer = platform.new_buyer()
    api = platform.client("address")
    first = _create(platform, buyer, label="Satu")
    second = _create(platform, buyer, label="Dua")
    third = _create(platform, buyer, label="Tiga")

    assert api.delete(f"{ADDRESSES}/{first['id']}", headers=buyer.headers).status_code == 204
    assert _default_ids(platform, buyer) == [third["id"]]
    assert api.delete(f"{ADDRESSES}/{second['id']}", headers=buyer.headers).status_code == 204
    assert _default_ids(platform, buyer) == [third["id"]]  # deleting a non-default moves nothing
    assert api.delete(f"{ADDRESSES}/{third['id']}", headers=buyer.headers).status_code == 204
    assert_problem(
        api.get(f"{ADDRESSES}/default", headers=buyer.headers), 404, "no_default_address"
    )


def test_the_default_cannot_be_unset_only_moved(platform: Platform) -> None:
    buyer = platform.new_buyer()
    api = platform.client("address")
    home = _create(platform, buyer)
    office = _create(platform, buyer, label="Kantor")
    before = snapshot(platform, "address")
    refused = api.patch(
        f"{ADDRESSES}/{home['id']}",
        json={"isDefault": False, "city": "Depok"},
        headers=buyer.headers,
    )
    assert_problem(refused, 409, "default_address_required")
    assert snapshot(platform, "address") == before

    kept = api.patch(
        f"{ADDRESSES}/{office['id']}", json={"isDefault": False}, headers=buyer.headers
    )
    assert kept.status_code == 200
    assert _default_ids(platform, buyer) == [home["id"]]


async def test_concurrent_set_default_leaves_exactly_one_default(platform: Platform) -> None:
    buyer = platform.new_buyer()
    ids = [_create(platform, buyer, label=f"Alamat {i}")["id"] for i in range(5)]
    async with httpx.AsyncClient(base_url=platform.url("address"), timeout=30) as api:
        responses = await asyncio.gather(
            *(
                api.post(f"{ADDRESSES}/{ids[i % len(ids)]}/default", headers=buyer.headers)
                for i in range(20)
            )
        )
        assert [r.status_code for r in responses] == [200] * 20
        listed = (await api.get(ADDRESSES, headers=buyer.headers)).json()
    defaults = [a["id"] for a in listed if a["isDefault"]]
    assert len(defaults) == 1
    assert len(listed) == len(ids)


async def test_concurrent_first_addresses_make_one_default(platform: Platform) -> None:
    buyer = platform.new_buyer()
    async with httpx.AsyncClient(base_url=platform.url("address"), timeout=30) as api:
        responses = await asyncio.gather(
            *(
                api.post(ADDRESSES, json=_body(label=f"Alamat {i}"), headers=buyer.headers)
                for i in range(10)
            )
        )
        assert [r.status_code for r in responses] == [201] * 10
        listed = (await api.get(ADDRESSES, headers=buyer.headers)).json()
    assert len(listed) == 10
    assert sum(a["isDefault"] for a in listed) == 1
    assert sum(r.json()["isDefault"] for r in responses) == 1


async def test_database_refuses_a_second_default(platform: Platform) -> None:
    buyer = platform.new_buyer()
    async with httpx.AsyncClient(base_url=platform.url("address")) as api:
        created = await api.post(ADDRESSES, json=_body(), headers=buyer.headers)
    assert created.json()["isDefault"] is True
    conn = await asyncpg.connect(plain_url(platform.database_url))
    try:
        with pytest.raises(asyncpg.UniqueViolationError):
            async with conn.transaction():
                await conn.execute(
                    "INSERT INTO address.addresses (id, user_id, label, recipient_name, phone, "
                    "street, city, province, postal_code, is_default) "
                    "VALUES ($1, $2, 'x', 'x', '0812345678', 'x', 'x', 'x', '12345', true)",
                    uuid.uuid4(),
                    uuid.UUID(buyer.id),
                )
    finally:
        await conn.close()


def test_a_buyer_cannot_touch_another_buyers_address(platform: Platform) -> None:
    owner, intruder = platform.new_buyer("Owner"), platform.new_buyer("Intruder")
    api = platform.client("address")
    home = _create(platform, owner)
    other = _create(platform, owner, label="Kantor")
    _create(platform, intruder, label="Punyaku")
    before = snapshot(platform, "address")

    target = f"{ADDRESSES}/{other['id']}"
    headers = intruder.headers
    assert_problem(api.get(target, headers=headers), 404, "address_not_found")
    assert_problem(api.patch(target, json={"city": "X"}, headers=headers), 404, "address_not_found")
    assert_problem(api.delete(target, headers=headers), 404, "address_not_found")
    assert_problem(api.post(f"{target}/default", headers=headers), 404, "address_not_found")
    assert_problem(
        api.get(ADDRESSES, params={"userId": owner.id}, headers=headers), 403, "user_mismatch"
    )
    assert_problem(
        api.get(f"{ADDRESSES}/default", params={"userId": owner.id}, headers=headers),
        403,
        "user_mismatch",
    )
    assert [a["label"] for a in _list(platform, intruder)] == ["Punyaku"]
    assert snapshot(platform, "address") == before
    assert _default_ids(platform, owner) == [home["id"]]


@pytest.mark.parametrize("reader", ["admin", "service"])
def test_admin_and_service_read_anyones_addresses(platform: Platform, reader: str) -> None:
    buyer = platform.new_buyer()
    home = _create(platform, buyer)
    office = _create(platform, buyer, label="Kantor")
    token = platform.admin_token if reader == "admin" else _service_token(platform)
    api, headers = platform.client("address"), bearer(token)

    assert api.get(f"{ADDRESSES}/{office['id']}", headers=headers).json() == office
    listed = api.get(ADDRESSES, params={"userId": buyer.id}, headers=headers)
    assert [a["id"] for a in listed.json()] == [home["id"], office["id"]]
    default = api.get(f"{ADDRESSES}/default", params={"userId": buyer.id}, headers=headers)
    assert default.json()["id"] == home["id"]


def test_admin_and_service_do_not_write_addresses(platform: Platform) -> None:
    buyer = platform.new_buyer()
    home = _create(platform, buyer)
    api = platform.client("address")
    before = snapshot(platform, "address")
    for token in (platform.admin_token, _service_token(platform)):
        headers = bearer(token)
        assert_problem(api.post(ADDRESSES, json=_body(), headers=headers), 403)
        target = f"{ADDRESSES}/{home['id']}"
        assert_problem(api.patch(target, json={"city": "X"}, headers=headers), 403)
        assert_problem(api.delete(target, headers=headers), 403)
        assert_problem(api.post(f"{target}/default", headers=headers), 403)
    assert snapshot(platform, "address") == before


def test_a_service_must_say_whose_addresses(platform: Platform) -> None:
    response = platform.client("address").get(ADDRESSES, headers=bearer(_service_token(platform)))
    assert_problem(response, 422, "user_id_required")


def _every_endpoint(address_id: str) -> list[tuple[str, str, dict[str, Any] | None]]:
    return [
        ("POST", ADDRESSES, _body()),
        ("GET", ADDRESSES, None),
        ("GET", f"{ADDRESSES}/default", None),
        ("GET", f"{ADDRESSES}/{address_id}", None),
        ("PATCH", f"{ADDRESSES}/{address_id}", {"city": "Bogor"}),
        ("DELETE", f"{ADDRESSES}/{address_id}", None),
        ("POST", f"{ADDRESSES}/{address_id}/default", None),
    ]


def test_every_endpoint_needs_a_token(platform: Platform) -> None:
    home = _create(platform, platform.new_buyer())
    api = platform.client("address")
    before = snapshot(platform, "address")
    for method, path, body in _every_endpoint(home["id"]):
        assert_problem(api.request(method, path, json=body), 401)
        invalid = api.request(method, path, json=body, headers=bearer("not.a.jwt"))
        assert_problem(invalid, 401, "invalid_token")
    assert snapshot(platform, "address") == before


def test_factory_accounts_have_no_addresses(platform: Platform) -> None:
    home = _create(platform, platform.new_buyer())
    api, headers = platform.client("address"), bearer(_factory_token(platform))
    before = snapshot(platform, "address")
    for method, path, body in _every_endpoint(home["id"]):
        assert_problem(api.request(method, path, json=body, headers=headers), 403, "forbidden")
    assert snapshot(platform, "address") == before


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({k: v for k, v in _body().items() if k != "street"}, 422, "invalid_input"),
        ({"label": "Rumah"}, 422, "invalid_input"),
        (_body(postalCode="1219"), 422, "invalid_input"),
        (_body(postalCode="121900"), 422, "invalid_input"),
        (_body(postalCode="12I90"), 422, "invalid_input"),
        (_body(postalCode=12190), 422, "invalid_input"),
        (_body(phone="call me"), 422, "invalid_input"),
        (_body(label="   "), 422, "invalid_input"),
        (_body(city="x" * 101), 422, "invalid_input"),
        (_body(isDefault="maybe"), 422, "invalid_input"),
        (_body(country="ID"), 422, "invalid_input"),
        (_body(userId="not-a-uuid"), 422, "invalid_input"),
        (_body(userId=str(uuid.uuid4())), 403, "user_mismatch"),
    ],
)
def test_invalid_new_address_is_refused(
    platform: Platform, body: dict[str, Any], status: int, code: str
) -> None:
    buyer = platform.new_buyer()
    before = snapshot(platform, "address")
    response = platform.client("address").post(ADDRESSES, json=body, headers=buyer.headers)
    assert_problem(response, status, code)
    assert snapshot(platform, "address") == before


def test_malformed_json_is_refused(platform: Platform) -> None:
    buyer = platform.new_buyer()
    home = _create(platform, buyer)
    api = platform.client("address")
    before = snapshot(platform, "address")
    headers = {**buyer.headers, "Content-Type": "application/json"}
    assert_problem(api.post(ADDRESSES, content=b'{"label": "Rumah",', headers=headers), 422)
    broken = api.patch(f"{ADDRESSES}/{home['id']}", content=b"{city: Bogor}", headers=headers)
    assert_problem(broken, 422)
    assert snapshot(platform, "address") == before


@pytest.mark.parametrize(
    "patch",
    [
        {"city": None},
        {"postalCode": "ABCDE"},
        {"label": ""},
        {"userId": str(uuid.uuid4())},  # an address never moves to another user
        {"isDefault": None},
    ],
)
def test_invalid_patch_is_refused(platform: Platform, patch: dict[str, Any]) -> None:
    buyer = platform.new_buyer()
    home = _create(platform, buyer)
    before = snapshot(platform, "address")
    response = platform.client("address").patch(
        f"{ADDRESSES}/{home['id']}", json=patch, headers=buyer.headers
    )
    assert_problem(response, 422, "invalid_input")
    assert snapshot(platform, "address") == before


def test_unknown_or_malformed_id(platform: Platform) -> None:
    buyer = platform.new_buyer()
    _create(platform, buyer)
    api = platform.client("address")
    before = snapshot(platform, "address")
    unknown = f"{ADDRESSES}/{uuid.uuid4()}"
    assert_problem(api.get(unknown, headers=buyer.headers), 404, "address_not_found")
    assert_problem(api.patch(unknown, json={"city": "X"}, headers=buyer.headers), 404)
    assert_problem(api.delete(unknown, headers=buyer.headers), 404, "address_not_found")
    assert_problem(api.post(f"{unknown}/default", headers=buyer.headers), 404)
    assert_problem(api.get(f"{ADDRESSES}/not-a-uuid", headers=buyer.headers), 422)
    assert_problem(api.get(ADDRESSES, params={"userId": "x"}, headers=buyer.headers), 422)
    assert snapshot(platform, "address") == before


def test_a_buyer_without_addresses_has_no_default(platform: Platform) -> None:
    buyer = platform.new_buyer()
    api = platform.client("address")
    assert _list(platform, buyer) == []
    assert_problem(
        api.get(f"{ADDRESSES}/default", headers=buyer.headers), 404, "no_default_address"
    )


def test_idempotency_key_replays_the_first_creation(platform: Platform) -> None:
    buyer = platform.new_buyer()
    api = platform.client("address")
    headers = {**buyer.headers, "Idempotency-Key": uuid.uuid4().hex}
    first = api.post(ADDRESSES, json=_body(), headers=headers)
    replayed = api.post(ADDRESSES, json=_body(), headers=headers)
    assert first.status_code == replayed.status_code == 201
    assert replayed.json() == first.json()
    assert replayed.headers["idempotent-replayed"] == "true"
    assert len(_list(platform, buyer)) == 1

    before = snapshot(platform, "address")
    reused = api.post(ADDRESSES, json=_body(label="Kantor"), headers=headers)
    assert_problem(reused, 422, "idempotency_key_reused")
    assert snapshot(platform, "address") == before


def test_address_book_has_a_limit(platform: Platform) -> None:
    buyer = platform.new_buyer()
    api = platform.client("address")
    for i in range(50):
        _create(platform, buyer, label=f"Alamat {i}")
    before = snapshot(platform, "address")
    assert_problem(
        api.post(ADDRESSES, json=_body(), headers=buyer.headers), 409, "address_limit_reached"
    )
    assert snapshot(platform, "address") == before


async def test_client_reads_addresses_for_other_services(platform: Platform) -> None:
    buyer, empty = platform.new_buyer(), platform.new_buyer()
    async with httpx.AsyncClient(base_url=platform.url("address")) as api:
        home = (await api.post(ADDRESSES, json=_body(), headers=buyer.headers)).json()
        await api.post(ADDRESSES, json=_body(label="Kantor"), headers=buyer.headers)

    http = new_http_client(5.0)
    try:
        tokens = platform.service_token_source(http, "logistics")
        client = AddressClient(platform.url("address"), http, tokens)

        fetched = await client.get_address(uuid.UUID(home["id"]))
        assert fetched is not None
        assert fetched.postal_code == "12190"
        assert fetched.user_id == uuid.UUID(buyer.id)
        assert await client.get_address(uuid.uuid4()) is None

        default = await client.get_default_address(uuid.UUID(buyer.id))
        assert default is not None
        assert str(default.id) == home["id"]
        assert await client.get_default_address(uuid.UUID(empty.id)) is None
    finally:
        await http.aclose()


def test_openapi_documents_every_endpoint(platform: Platform) -> None:
    spec = platform.client("address").get("/openapi.json").json()
    paths = spec["paths"]
    operations = {
        (method.upper(), path): operation
        for path, item in paths.items()
        if path.startswith(ADDRESSES)
        for method, operation in item.items()
    }
    assert set(operations) == {
        ("POST", ADDRESSES),
        ("GET", ADDRESSES),
        ("GET", f"{ADDRESSES}/default"),
        ("GET", f"{ADDRESSES}/{{address_id}}"),
        ("PATCH", f"{ADDRESSES}/{{address_id}}"),
        ("DELETE", f"{ADDRESSES}/{{address_id}}"),
        ("POST", f"{ADDRESSES}/{{address_id}}/default"),
    }
    for (method, path), operation in operations.items():
        responses = operation["responses"]
        success = [code for code in responses if code.startswith("2")]
        assert len(success) == 1, (method, path)
        if success != ["204"]:  # 204 No Content has no body to describe
            assert responses[success[0]]["content"]["application/json"]["schema"], (method, path)
        for error in ("401", "403", "404", "422"):
            assert "application/problem+json" in responses[error]["content"], (method, path)
    for method, path in (("POST", ADDRESSES), ("PATCH", f"{ADDRESSES}/{{address_id}}")):
        schema = operations[(method, path)]["requestBody"]["content"]["application/json"]
        assert schema["schema"]["$ref"]
    create = spec["components"]["schemas"]["AddressCreate"]
    assert set(create["required"]) == {
        "label",
        "recipientName",
        "phone",
        "street",
        "city",
        "province",
        "postalCode",
    }
