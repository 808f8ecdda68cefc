import asyncio
import uuid
from typing import Any

import httpx
import pytest

from laku.core.http import new_http_client
from laku.group_buying.client import GroupBuyingClient
from laku.testing.catalog import SEED_VARIANTS, created
from laku.testing.platform import Platform, bearer
from tests.support import admin_headers, assert_problem, snapshot

ADMIN_PATH = "/api/admin/bundle-composition"


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8].upper()}"


@pytest.fixture(scope="module")
def factory_id(platform: Platform) -> str:
    body = {
        "name": _unique("Konveksi Maju"),
        "ownerName": "Budi Santoso",
        "phone": "+6281234567890",
        "address": "Jl. Industri No. 5",
        "postalCode": "40123",
    }
    return created(
        platform.client("factory").post(
            "/api/factories", json=body, headers=admin_headers(platform)
        )
    )["id"]


@pytest.fixture(scope="module")
def category_id(platform: Platform) -> str:
    body = {"name": "Pakaian", "slug": _unique("pakaian").lower()}
    return created(
        platform.client("product").post(
            "/api/categories", json=body, headers=admin_headers(platform)
        )
    )["id"]


def _tshirt(platform: Platform, factory_id: str, category_id: str) -> dict[str, str]:
    """The seed's T-shirt (steps 1.1 and 1.2): its product id and its variants' ids by size."""
    product_body = {
        "factoryId": factory_id,
        "categoryId": category_id,
        "sku": _unique("TSHIRT"),
        "name": "Premium T-Shirt",
        "basePrice": 150000,
        "costPrice": 80000,
        "moq": 100,
        "groupDurationHours": 168,
    }
    catalog = platform.client("product")
    product_id = created(
        catalog.post("/api/products", json=product_body, headers=admin_headers(platform))
    )["id"]
    variants = [{**variant, "sku": _unique(variant["sku"])} for variant in SEED_VARIANTS]
    added = created(
        catalog.post(
            f"/api/products/{product_id}/variants", json=variants, headers=admin_headers(platform)
        )
    )
    sizes = dict(zip(("S", "M", "L"), (variant["id"] for variant in added), strict=True))
    return {"product": product_id, **sizes}


@pytest.fixture
def tshirt(platform: Platform, factory_id: str, category_id: str) -> dict[str, str]:
    return _tshirt(platform, factory_id, category_id)


def _seed_body(tshirt: dict[str, str], units: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"productId": tshirt["product"], "variantId": tshirt[size], "unitsInBundle": n}
        for size, n in units.items()
    ]


def _items(tshirt: dict[str, str], units: dict[str, int]) -> list[dict[str, Any]]:
    """The composition's items as GET lists them: ordered by variantId."""
    items = [{"variantId": tshirt[size], "unitsInBundle": n} for size, n in units.items()]
    return sorted(items, key=lambda item: uuid.UUID(item["variantId"]))


def _get(platform: Platform, product_id: str, headers: dict[str, str]) -> httpx.Response:
    return platform.client("group-buying").get(
        f"/api/bundle-composition/{product_id}", headers=headers
    )


# --- the seed's step 1.3 ------------------------------------------------------------------------


def test_seed_step_1_3_sets_a_bundle_of_4s_4m_4l(
    platform: Platform, tshirt: dict[str, str]
) -> None:
    body = _seed_body(tshirt, {"S": 4, "M": 4, "L": 4})
    response = platform.client("group-buying").post(
        ADMIN_PATH, json=body, headers=admin_headers(platform)
    )
    expected = {
        "productId": tshirt["product"],
        "unitsPerBundle": 12,
        "items": _items(tshirt, {"S": 4, "M": 4, "L": 4}),
    }
    assert created(response) == expected

    buyer = platform.new_buyer()
    fetched = _get(platform, tshirt["product"], buyer.headers)
    assert fetched.status_code == 200, fetched.text
    assert fetched.json() == expected


def test_post_replaces_the_whole_composition(platform: Platform, tshirt: dict[str, str]) -> None:
    api = platform.client("group-buying")
    created(
        api.post(
            ADMIN_PATH,
            json=_seed_body(tshirt, {"S": 4, "M": 4, "L": 4}),
            headers=admin_headers(platform),
        )
    )
    replaced = created(
        api.post(
            ADMIN_PATH, json=_seed_body(tshirt, {"M": 6, "L": 2}), headers=admin_headers(platform)
        )
    )
    assert replaced["unitsPerBundle"] == 8
    assert replaced["items"] == _items(tshirt, {"M": 6, "L": 2})  # S left the bundle
    assert _get(platform, tshirt["product"], admin_headers(platform)).json() == replaced


def test_put_replaces_and_delete_removes(platform: Platform, tshirt: dict[str, str]) -> None:
    api = platform.client("group-buying")
    path = f"{ADMIN_PATH}/{tshirt['product']}"
    # PUT also sets a composition the product did not have yet.
    first = api.put(
        path, json=[{"variantId": tshirt["S"], "unitsInBundle": 3}], headers=admin_headers(platform)
    )
    assert first.status_code == 200, first.text
    assert first.json()["unitsPerBundle"] == 3

    body = [
        {"variantId": tshirt["S"], "unitsInBundle": 2},
        {"variantId": tshirt["M"], "unitsInBundle": 5},
        {"variantId": tshirt["L"], "unitsInBundle": 1},
    ]
    replaced = api.put(path, json=body, headers=admin_headers(platform))
    assert replaced.status_code == 200, replaced.text
    assert replaced.json() == {
        "productId": tshirt["product"],
        "unitsPerBundle": 8,
        "items": _items(tshirt, {"S": 2, "M": 5, "L": 1}),
    }
    assert _get(platform, tshirt["product"], admin_headers(platform)).json() == replaced.json()

    deleted = api.delete(path, headers=admin_headers(platform))
    assert deleted.status_code == 204, deleted.text
    assert deleted.content == b""
    assert_problem(
        _get(platform, tshirt["product"], admin_headers(platform)), 404, "composition_not_found"
    )
    assert_problem(api.delete(path, headers=admin_headers(platform)), 404, "composition_not_found")


def test_a_product_without_composition_is_not_found(platform: Platform) -> None:
    assert_problem(
        _get(platform, str(uuid.uuid4()), admin_headers(platform)), 404, "composition_not_found"
    )


def test_an_idempotent_retry_replays_the_first_response(
    platform: Platform, tshirt: dict[str, str]
) -> None:
    api = platform.client("group-buying")
    headers = {**admin_headers(platform), "Idempotency-Key": str(uuid.uuid4())}
    body = _seed_body(tshirt, {"S": 4, "M": 4, "L": 4})
    first = created(api.post(ADMIN_PATH, json=body, headers=headers))
    retried = api.post(ADMIN_PATH, json=body, headers=headers)
    assert retried.status_code == 201
    assert retried.headers["idempotent-replayed"] == "true"
    assert retried.json() == first
    other_body = _seed_body(tshirt, {"S": 1})
    assert_problem(api.post(ADMIN_PATH, json=other_body, headers=headers), 422)


# --- refusals -----------------------------------------------------------------------------------


def test_invalid_compositions_are_refused_and_change_nothing(
    platform: Platform, factory_id: str, category_id: str, tshirt: dict[str, str]
) -> None:
    api = platform.client("group-buying")
    seed = _seed_body(tshirt, {"S": 4, "M": 4, "L": 4})
    created(api.post(ADMIN_PATH, json=seed, headers=admin_headers(platform)))
    other = _tshirt(platform, factory_id, category_id)
    unknown_product_id = str(uuid.uuid4())

    def with_units(units: Any) -> list[dict[str, Any]]:
        return [*seed[:2], {**seed[2], "unitsInBundle": units}]

    cases: list[tuple[Any, str]] = [
        (with_units(0), "invalid_input"),
        (with_units(-4), "invalid_input"),
        (with_units(1.5), "invalid_input"),
        (with_units(4.0), "invalid_input"),
        (with_units("4"), "invalid_input"),
        (with_units(True), "invalid_input"),
        (with_units(None), "invalid_input"),
        ([], "invalid_input"),
        ({"productId": tshirt["product"]}, "invalid_input"),
        ([{**seed[0], "units": 4}], "invalid_input"),
        ([{"variantId": tshirt["S"], "unitsInBundle": 4}], "invalid_input"),
        ([*seed[:2], {**seed[2], "productId": other["product"]}], "mixed_products"),
        ([*seed, {**seed[0], "unitsInBundle": 1}], "duplicate_variant"),
        ([*seed[:2], {**seed[2], "variantId": other["L"]}], "unknown_variant"),
        ([*seed[:2], {**seed[2], "variantId": str(uuid.uuid4())}], "unknown_variant"),
        ([{**item, "productId": unknown_product_id} for item in seed], "unknown_product"),
    ]
    replace_path = f"{ADMIN_PATH}/{tshirt['product']}"
    replace_cases: list[tuple[Any, str]] = [
        ([{"variantId": tshirt["S"], "unitsInBundle": 0}], "invalid_input"),
        ([{"variantId": tshirt["S"], "unitsInBundle": "4"}], "invalid_input"),
        ([], "invalid_input"),
        (seed, "invalid_input"),  # productId belongs to the path here
        (
            [
                {"variantId": tshirt["S"], "unitsInBundle": 1},
                {"variantId": tshirt["S"], "unitsInBundle": 2},
            ],
            "duplicate_variant",
        ),
        ([{"variantId": other["S"], "unitsInBundle": 4}], "unknown_variant"),
    ]

    before = snapshot(platform, "group_buying")
    for body, code in cases:
        body_problem = assert_problem(
            api.post(ADMIN_PATH, json=body, headers=admin_headers(platform)), 422
        )
        assert body_problem["code"] == code, (body, body_problem)
    for body, code in replace_cases:
        body_problem = assert_problem(
            api.put(replace_path, json=body, headers=admin_headers(platform)), 422
        )
        assert body_problem["code"] == code, (body, body_problem)
    unknown_product = api.put(
        f"{ADMIN_PATH}/{uuid.uuid4()}",
        json=[{"variantId": tshirt["S"], "unitsInBundle": 4}],
        headers=admin_headers(platform),
    )
    assert_problem(unknown_product, 422, "unknown_product")
    assert snapshot(platform, "group_buying") == before
    assert _get(platform, tshirt["product"], admin_headers(platform)).json()["unitsPerBundle"] == 12


def test_only_admins_write_and_only_callers_with_a_token_read(
    platform: Platform, tshirt: dict[str, str]
) -> None:
    api = platform.client("group-buying")
    buyer = platform.new_buyer()
    path = f"{ADMIN_PATH}/{tshirt['product']}"
    seed = _seed_body(tshirt, {"S": 4, "M": 4, "L": 4})
    replace = [{"variantId": tshirt["S"], "unitsInBundle": 4}]
    before = snapshot(platform, "group_buying")
    for headers, status in (({}, 401), (buyer.headers, 403), (bearer("not-a-token"), 401)):
        assert_problem(api.post(ADMIN_PATH, json=seed, headers=headers), status)
        assert_problem(api.put(path, json=replace, headers=headers), status)
        assert_problem(api.delete(path, headers=headers), status)
    assert_problem(_get(platform, tshirt["product"], {}), 401)
    assert snapshot(platform, "group_buying") == before


async def test_concurrent_first_compositions_leave_one_whole_bundle(
    platform: Platform, tshirt: dict[str, str]
) -> None:
    bodies = [
        _seed_body(tshirt, {"S": n, "M": n, "L": n}) if n % 2 else _seed_body(tshirt, {"M": n})
        for n in range(1, 11)
    ]
    async with httpx.AsyncClient(base_url=platform.url("group-buying"), timeout=30) as api:
        responses = await asyncio.gather(
            *(api.post(ADMIN_PATH, json=body, headers=admin_headers(platform)) for body in bodies)
        )
        assert [r.status_code for r in responses] == [201] * len(bodies), [
            r.text for r in responses
        ]
        final = (
            await api.get(
                f"/api/bundle-composition/{tshirt['product']}", headers=admin_headers(platform)
            )
        ).json()
    # Whichever write came last, the bundle is exactly one of the compositions sent.
    assert final in [response.json() for response in responses]


# --- the typed client other services use ----------------------------------------------------


async def test_client_reads_a_composition_for_other_services(
    platform: Platform, tshirt: dict[str, str]
) -> None:
    async with httpx.AsyncClient(base_url=platform.url("group-buying")) as api:
        response = await api.post(
            ADMIN_PATH,
            json=_seed_body(tshirt, {"S": 4, "M": 4, "L": 4}),
            headers=admin_headers(platform),
        )
        assert response.status_code == 201, response.text

    http = new_http_client(5.0)
    try:
        tokens = platform.service_token_source(http, "warehouse")
        client = GroupBuyingClient(platform.url("group-buying"), http, tokens)

        composition = await client.get_bundle_composition(uuid.UUID(tshirt["product"]))
        assert composition is not None
        assert composition.product_id == uuid.UUID(tshirt["product"])
        assert composition.units_per_bundle == 12
        assert {item.variant_id: item.units_in_bundle for item in composition.items} == {
            uuid.UUID(tshirt[size]): 4 for size in ("S", "M", "L")
        }
        assert await client.get_bundle_composition(uuid.uuid4()) is None
    finally:
        await http.aclose()
