import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import httpx
import pytest

from laku.product.client import ProductClient
from laku.product.schemas import ProductDetailOut
from laku.testing.catalog import SEED_VARIANTS
from laku.testing.platform import Platform, bearer
from tests.support import admin_headers, assert_problem, snapshot


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8].upper()}"


def _create_factory(platform: Platform) -> str:
    body = {
        "name": _unique("Konveksi Maju"),
        "ownerName": "Budi Santoso",
        "phone": "+6281234567890",
        "address": "Jl. Industri No. 5",
        "postalCode": "40123",
    }
    response = platform.client("factory").post(
        "/api/factories", json=body, headers=admin_headers(platform)
    )
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _create_category(platform: Platform, name: str, parent_id: str | None = None) -> dict:
    body: dict = {"name": name, "slug": _unique("cat").lower()}
    if parent_id:
        body["parentId"] = parent_id
    response = platform.client("product").post(
        "/api/categories", json=body, headers=admin_headers(platform)
    )
    assert response.status_code == 201, response.text
    return response.json()


@pytest.fixture(scope="module")
def factory_id(platform: Platform) -> str:
    return _create_factory(platform)


@pytest.fixture(scope="module")
def category_id(platform: Platform) -> str:
    return _create_category(platform, "Pakaian")["id"]


def _product_body(factory_id: str, category_id: str, **overrides: object) -> dict:
    body = {
        "factoryId": factory_id,
        "categoryId": category_id,
        "sku": _unique("TSHIRT"),
        "name": "Premium T-Shirt",
        "basePrice": 150000,
        "costPrice": 80000,
        "moq": 100,
        "groupDurationHours": 168,
    }
    return {**body, **overrides}


def _create_product(platform: Platform, factory_id: str, category_id: str, **overrides) -> dict:
    response = platform.client("product").post(
        "/api/products",
        json=_product_body(factory_id, category_id, **overrides),
        headers=admin_headers(platform),
    )
    assert response.status_code == 201, response.text
    return response.json()


def _variants(count: int = 2) -> list[dict]:
    return [
        {"sku": _unique("VAR"), "variantName": f"Size {n}", "priceAdjustment": n * 1000}
        for n in range(count)
    ]


def _add_variants(platform: Platform, product_id: str, variants: list[dict]) -> httpx.Response:
    return platform.client("product").post(
        f"/api/products/{product_id}/variants", json=variants, headers=admin_headers(platform)
    )


def _action(platform: Platform, product_id: str, action: str) -> httpx.Response:
    return platform.client("product").post(
        f"/api/products/{product_id}/{action}", headers=admin_headers(platform)
    )


def _published_product(platform: Platform, factory_id: str, category_id: str, **overrides) -> dict:
    product = _create_product(platform, factory_id, category_id, **overrides)
    assert _add_variants(platform, product["id"], _variants()).status_code == 201
    published = _action(platform, product["id"], "publish")
    assert published.status_code == 200, published.text
    return published.json()


# --- the seed's steps ---------------------------------------------------------------------------


def test_seed_steps_1_1_and_1_2_create_a_product_and_its_variants(
    platform: Platform, factory_id: str, category_id: str
) -> None:
    product_body = {
        "factoryId": factory_id,
        "categoryId": category_id,
        "sku": "TSHIRT-001",
        "name": "Premium T-Shirt",
        "basePrice": 150000,
        "costPrice": 80000,
        "moq": 100,
        "groupDurationHours": 168,
    }
    created = platform.client("product").post(
        "/api/products", json=product_body, headers=admin_headers(platform)
    )
    assert created.status_code == 201, created.text
    product = created.json()
    assert {key: product[key] for key in product_body} == product_body
    assert product["status"] == "draft"
    assert product["description"] is None
    uuid.UUID(product["id"])

    added = _add_variants(platform, product["id"], SEED_VARIANTS)
    assert added.status_code == 201, added.text
    variants = added.json()
    assert [
        {key: variant[key] for key in ("sku", "variantName", "priceAdjustment")}
        for variant in variants
    ] == SEED_VARIANTS
    assert all(variant["productId"] == product["id"] for variant in variants)

    detail = platform.client("product").get(
        f"/api/products/{product['id']}", headers=admin_headers(platform)
    )
    assert detail.status_code == 200
    assert [v["variantName"] for v in detail.json()["variants"]] == ["Small", "Medium", "Large"]
    assert detail.json()["images"] == []
    listed = platform.client("product").get(
        f"/api/products/{product['id']}/variants", headers=admin_headers(platform)
    )
    assert listed.json() == detail.json()["variants"]


# --- categories ----------------------------------------------------------------------------------


def test_categories_nest_and_are_listed_publicly(platform: Platform) -> None:
    name = _unique("Pakaian & Fashion")
    parent = platform.client("product").post(
        "/api/categories", json={"name": name}, headers=admin_headers(platform)
    )
    assert parent.status_code == 201, parent.text
    assert parent.json()["slug"] == name.lower().replace(" & ", "-")
    assert parent.json()["parentId"] is None
    child = _create_category(platform, "Kaos", parent_id=parent.json()["id"])
    assert child["parentId"] == parent.json()["id"]

    listed = platform.client("product").get("/api/categories")
    assert listed.status_code == 200
    assert {parent.json()["id"], child["id"]} <= {category["id"] for category in listed.json()}


def test_category_refusals_change_nothing(platform: Platform, category_id: str) -> None:
    taken_slug = platform.client("product").get("/api/categories").json()[0]["slug"]
    product = platform.client("product")
    before = snapshot(platform, "product")
    cases = [
        ({"name": "Dup", "slug": taken_slug}, 409, "slug_taken"),
        ({"name": "Orphan", "parentId": str(uuid.uuid4())}, 422, "unknown_category"),
        ({"name": "!!!"}, 422, "invalid_slug"),
        ({"name": "Bad", "slug": "Not A Slug"}, 422, "invalid_input"),
        ({"slug": "no-name"}, 422, "invalid_input"),
    ]
    for body, status, code in cases:
        response = product.post("/api/categories", json=body, headers=admin_headers(platform))
        assert_problem(response, status, code)
    assert snapshot(platform, "product") == before


# --- listing ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def catalog(platform: Platform) -> dict:
    """A factory of its own with five products: three published (one in a subcategory), one
    draft, one archived."""
    factory_id = _create_factory(platform)
    category = _create_category(platform, "Busana")
    subcategory = _create_category(platform, "Batik", parent_id=category["id"])
    published = [
        _published_product(platform, factory_id, category["id"], name="Kaos Polos Hitam"),
        _published_product(platform, factory_id, category["id"], name="Kemeja 100%_Katun"),
        _published_product(platform, factory_id, subcategory["id"], name="Batik Tulis"),
    ]
    draft = _create_product(platform, factory_id, category["id"], name="Kaos Draft")
    archived = _published_product(platform, factory_id, category["id"], name="Kaos Lama")
    assert _action(platform, archived["id"], "archive").status_code == 200
    return {
        "factory_id": factory_id,
        "category_id": category["id"],
        "subcategory_id": subcategory["id"],
        "published": published,
        "draft": draft,
        "archived": archived,
    }


def _list(platform: Platform, headers: dict | None = None, **params: object) -> httpx.Response:
    return platform.client("product").get("/api/products", params=params, headers=headers)


def _names(response: httpx.Response) -> set[str]:
    assert response.status_code == 200, response.text
    return {product["name"] for product in response.json()["items"]}


def test_public_list_shows_published_products_only(platform: Platform, catalog: dict) -> None:
    response = _list(platform, factoryId=catalog["factory_id"])
    assert _names(response) == {"Kaos Polos Hitam", "Kemeja 100%_Katun", "Batik Tulis"}
    assert response.json()["total"] == 3
    assert all(product["costPrice"] is None for product in response.json()["items"])
    buyer = platform.new_buyer()
    assert _names(_list(platform, buyer.headers, factoryId=catalog["factory_id"])) == _names(
        response
    )


def test_admin_list_shows_every_status_and_filters_by_it(platform: Platform, catalog: dict) -> None:
    admin = admin_headers(platform)
    everything = _list(platform, admin, factoryId=catalog["factory_id"])
    assert everything.json()["total"] == 5
    assert all(product["costPrice"] == 80000 for product in everything.json()["items"])
    assert _names(_list(platform, admin, factoryId=catalog["factory_id"], status="draft")) == {
        "Kaos Draft"
    }
    assert _names(_list(platform, admin, factoryId=catalog["factory_id"], status="archived")) == {
        "Kaos Lama"
    }


def test_public_cannot_filter_for_unpublished_products(platform: Platform, catalog: dict) -> None:
    assert_problem(_list(platform, status="draft"), 403, "admin_only_filter")
    published = _list(platform, status="published", factoryId=catalog["factory_id"])
    assert published.json()["total"] == 3


def test_list_pages_through_results_newest_first(platform: Platform, catalog: dict) -> None:
    pages = [
        _list(platform, factoryId=catalog["factory_id"], limit=2, offset=offset).json()
        for offset in (0, 2, 4)
    ]
    assert [len(page["items"]) for page in pages] == [2, 1, 0]
    assert all(page["total"] == 3 and page["limit"] == 2 for page in pages)
    ids = [product["id"] for page in pages for product in page["items"]]
    newest_first = [product["id"] for product in reversed(catalog["published"])]
    assert ids == newest_first
    assert_problem(_list(platform, limit=0), 422)
    assert_problem(_list(platform, limit=101), 422)
    assert_problem(_list(platform, offset=-1), 422)


def test_list_filters_by_category_including_subcategories(
    platform: Platform, catalog: dict
) -> None:
    assert _names(_list(platform, categoryId=catalog["subcategory_id"])) == {"Batik Tulis"}
    assert _names(_list(platform, categoryId=catalog["category_id"])) == {
        "Kaos Polos Hitam",
        "Kemeja 100%_Katun",
        "Batik Tulis",
    }
    assert _list(platform, categoryId=str(uuid.uuid4())).json()["total"] == 0
    assert _list(platform, factoryId=str(uuid.uuid4())).json()["total"] == 0


def test_search_matches_names_case_insensitively_and_literally(
    platform: Platform, catalog: dict
) -> None:
    factory = catalog["factory_id"]
    assert _names(_list(platform, factoryId=factory, q="kaos")) == {"Kaos Polos Hitam"}
    assert _names(_list(platform, factoryId=factory, q="POLOS hit")) == {"Kaos Polos Hitam"}
    # % and _ are searched for as themselves, not as wildcards.
    assert _names(_list(platform, factoryId=factory, q="100%_")) == {"Kemeja 100%_Katun"}
    assert _names(_list(platform, factoryId=factory, q="%")) == {"Kemeja 100%_Katun"}
    admin = admin_headers(platform)
    assert _names(_list(platform, admin, factoryId=factory, q="kaos")) == {
        "Kaos Polos Hitam",
        "Kaos Draft",
        "Kaos Lama",
    }


# --- visibility ----------------------------------------------------------------------------------


def test_unpublished_products_are_hidden_from_the_public(platform: Platform, catalog: dict) -> None:
    product = platform.client("product")
    buyer = platform.new_buyer()
    for hidden in (catalog["draft"], catalog["archived"]):
        for headers in (None, buyer.headers):
            assert_problem(product.get(f"/api/products/{hidden['id']}", headers=headers), 404)
            assert_problem(
                product.get(f"/api/products/{hidden['id']}/variants", headers=headers), 404
            )
        as_admin = product.get(f"/api/products/{hidden['id']}", headers=admin_headers(platform))
        assert as_admin.status_code == 200
        assert as_admin.json()["costPrice"] == 80000

    shown = product.get(f"/api/products/{catalog['published'][0]['id']}")
    assert shown.status_code == 200
    assert shown.json()["status"] == "published"
    assert shown.json()["costPrice"] is None
    assert len(shown.json()["variants"]) == 2


def test_a_bad_token_is_refused_even_on_public_reads(platform: Platform, catalog: dict) -> None:
    product = platform.client("product")
    assert_problem(product.get("/api/products", headers=bearer("not.a.jwt")), 401)
    path = f"/api/products/{catalog['published'][0]['id']}"
    assert_problem(product.get(path, headers=bearer("not.a.jwt")), 401, "invalid_token")


def test_unknown_product_is_404(platform: Platform) -> None:
    product = platform.client("product")
    missing = uuid.uuid4()
    assert_problem(
        product.get(f"/api/products/{missing}", headers=admin_headers(platform)),
        404,
        "product_not_found",
    )
    assert_problem(product.get("/api/products/not-a-uuid"), 422)


# --- lifecycle -----------------------------------------------------------------------------------


def test_publish_and_archive_rules(platform: Platform, factory_id: str, category_id: str) -> None:
    product = _create_product(platform, factory_id, category_id)
    before = snapshot(platform, "product")
    assert_problem(_action(platform, product["id"], "publish"), 409, "no_variants")
    assert snapshot(platform, "product") == before

    assert _add_variants(platform, product["id"], _variants()).status_code == 201
    published = _action(platform, product["id"], "publish")
    assert published.status_code == 200, published.text
    assert published.json()["status"] == "published"
    assert_problem(_action(platform, product["id"], "publish"), 409, "invalid_status")

    archived = _action(platform, product["id"], "archive")
    assert archived.status_code == 200
    assert archived.json()["status"] == "archived"

    before = snapshot(platform, "product")
    assert_problem(_action(platform, product["id"], "publish"), 409, "invalid_status")
    assert_problem(_action(platform, product["id"], "archive"), 409, "invalid_status")
    assert_problem(_add_variants(platform, product["id"], _variants(1)), 409, "invalid_status")
    edit = platform.client("product").patch(
        f"/api/products/{product['id']}", json={"name": "Revived"}, headers=admin_headers(platform)
    )
    assert_problem(edit, 409, "invalid_status")
    assert snapshot(platform, "product") == before

    missing = uuid.uuid4()
    assert_problem(_action(platform, str(missing), "publish"), 404, "product_not_found")
    assert_problem(_action(platform, str(missing), "archive"), 404, "product_not_found")


def test_an_abandoned_draft_can_be_archived(
    platform: Platform, factory_id: str, category_id: str
) -> None:
    product = _create_product(platform, factory_id, category_id)
    archived = _action(platform, product["id"], "archive")
    assert archived.status_code == 200
    assert archived.json()["status"] == "archived"


# --- creating products: refusals ----------------------------------------------------------------


def _without(body: dict, field: str) -> dict:
    return {key: value for key, value in body.items() if key != field}


REQUIRED_PRODUCT_FIELDS = [
    "factoryId",
    "categoryId",
    "sku",
    "name",
    "basePrice",
    "costPrice",
    "moq",
    "groupDurationHours",
]


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        *[
            (lambda body, field=field: _without(body, field), 422, "invalid_input")
            for field in REQUIRED_PRODUCT_FIELDS
        ],
        (lambda body: {**body, "basePrice": -1}, 422, "invalid_input"),
        (lambda body: {**body, "costPrice": -1}, 422, "invalid_input"),
        (lambda body: {**body, "basePrice": "150000"}, 422, "invalid_input"),
        (lambda body: {**body, "basePrice": 150000.5}, 422, "invalid_input"),
        (lambda body: {**body, "basePrice": 150000.0}, 422, "invalid_input"),
        (lambda body: {**body, "costPrice": "80000"}, 422, "invalid_input"),
        (lambda body: {**body, "moq": 0}, 422, "invalid_input"),
        (lambda body: {**body, "moq": "100"}, 422, "invalid_input"),
        (lambda body: {**body, "groupDurationHours": 0}, 422, "invalid_input"),
        (lambda body: {**body, "sku": "has spaces"}, 422, "invalid_input"),
        (lambda body: {**body, "name": ""}, 422, "invalid_input"),
        (lambda body: {**body, "status": "published"}, 422, "invalid_input"),
        (lambda body: {**body, "costPrice": 150001}, 422, "cost_above_price"),
        (lambda body: {**body, "categoryId": str(uuid.uuid4())}, 422, "unknown_category"),
        (lambda body: {**body, "factoryId": str(uuid.uuid4())}, 422, "unknown_factory"),
        (lambda body: {**body, "factoryId": "not-a-uuid"}, 422, "invalid_input"),
    ],
    ids=[
        *[f"missing-{field}" for field in REQUIRED_PRODUCT_FIELDS],
        "negative-base-price",
        "negative-cost-price",
        "string-price",
        "fractional-price",
        "float-price",
        "string-cost-price",
        "zero-moq",
        "string-moq",
        "zero-duration",
        "bad-sku",
        "empty-name",
        "status-not-settable",
        "cost-above-price",
        "unknown-category",
        "unknown-factory",
        "malformed-factory-id",
    ],
)
def test_invalid_product_is_refused_and_changes_nothing(
    platform: Platform, factory_id: str, category_id: str, change, status: int, code: str
) -> None:
    body = change(_product_body(factory_id, category_id))
    before = snapshot(platform, "product")
    response = platform.client("product").post(
        "/api/products", json=body, headers=admin_headers(platform)
    )
    assert_problem(response, status, code)
    assert snapshot(platform, "product") == before


def test_duplicate_sku_is_a_conflict(platform: Platform, factory_id: str, category_id: str) -> None:
    existing = _create_product(platform, factory_id, category_id)
    before = snapshot(platform, "product")
    again = platform.client("product").post(
        "/api/products",
        json=_product_body(factory_id, category_id, sku=existing["sku"], name="Other"),
        headers=admin_headers(platform),
    )
    assert_problem(again, 409, "sku_taken")
    assert snapshot(platform, "product") == before


def test_malformed_and_oversized_bodies_are_refused(platform: Platform) -> None:
    product = platform.client("product")
    headers = {**admin_headers(platform), "content-type": "application/json"}
    before = snapshot(platform, "product")
    assert_problem(product.post("/api/products", content=b'{"sku": "X-1",', headers=headers), 422)
    assert_problem(product.post("/api/products", content=b"[1, 2]", headers=headers), 422)
    ten_megabytes = b'{"name": "' + b"x" * (10 * 1024 * 1024) + b'"}'
    assert_problem(product.post("/api/products", content=ten_megabytes, headers=headers), 413)
    assert snapshot(platform, "product") == before


def _product_count(platform: Platform) -> int:
    # A snapshot entry reads "<row count>:<content hash>".
    return int(snapshot(platform, "product")["product"]["products"].split(":")[0])


def test_idempotency_key_replays_the_first_response(
    platform: Platform, factory_id: str, category_id: str
) -> None:
    body = _product_body(factory_id, category_id)
    headers = {**admin_headers(platform), "Idempotency-Key": uuid.uuid4().hex}
    product = platform.client("product")
    before_first = _product_count(platform)
    first = product.post("/api/products", json=body, headers=headers)
    assert first.status_code == 201, first.text
    assert _product_count(platform) == before_first + 1
    before = snapshot(platform, "product")
    second = product.post("/api/products", json=body, headers=headers)
    assert second.status_code == 201
    assert second.json() == first.json()
    assert second.headers["idempotent-replayed"] == "true"
    assert snapshot(platform, "product") == before

    reused = product.post("/api/products", json={**body, "name": "Another"}, headers=headers)
    assert_problem(reused, 422, "idempotency_key_reused")
    assert snapshot(platform, "product") == before


# --- variants ------------------------------------------------------------------------------------


def test_negative_adjustment_is_fine_while_the_price_stays_positive(
    platform: Platform, factory_id: str, category_id: str
) -> None:
    product = _create_product(platform, factory_id, category_id, basePrice=10000, costPrice=5000)
    cheaper = [{"sku": _unique("VAR"), "variantName": "Kecil", "priceAdjustment": -10000}]
    added = _add_variants(platform, product["id"], cheaper)
    assert added.status_code == 201, added.text
    assert added.json()[0]["priceAdjustment"] == -10000


TAKEN_VARIANT_SKU = _unique("TAKEN")


@pytest.fixture(scope="module")
def taken_variant_sku(platform: Platform, factory_id: str, category_id: str) -> str:
    product = _create_product(platform, factory_id, category_id)
    taken = [{"sku": TAKEN_VARIANT_SKU, "variantName": "Taken", "priceAdjustment": 0}]
    assert _add_variants(platform, product["id"], taken).status_code == 201
    return TAKEN_VARIANT_SKU


def _bad_third(bad: dict) -> list[dict]:
    return [*_variants(2), bad]


@pytest.mark.parametrize(
    ("variants", "status", "code"),
    [
        ([], 422, "invalid_input"),
        (_bad_third({"variantName": "No SKU", "priceAdjustment": 0}), 422, "invalid_input"),
        (
            _bad_third({"sku": "VAR-F", "variantName": "F", "priceAdjustment": 1.5}),
            422,
            "invalid_input",
        ),
        (
            _bad_third({"sku": "VAR-S", "variantName": "S", "priceAdjustment": "5"}),
            422,
            "invalid_input",
        ),
        (
            _bad_third({"sku": "VAR-NEG", "variantName": "Neg", "priceAdjustment": -150001}),
            422,
            "negative_variant_price",
        ),
        (
            _bad_third({"sku": TAKEN_VARIANT_SKU, "variantName": "Taken", "priceAdjustment": 0}),
            409,
            "sku_taken",
        ),
        (
            [
                {"sku": "VAR-DUP", "variantName": "A", "priceAdjustment": 0},
                {"sku": "VAR-B", "variantName": "B", "priceAdjustment": 0},
                {"sku": "VAR-DUP", "variantName": "C", "priceAdjustment": 0},
            ],
            422,
            "duplicate_sku",
        ),
        (
            [
                {"sku": _unique("VAR"), "variantName": "Same", "priceAdjustment": 0},
                {"sku": _unique("VAR"), "variantName": "Other", "priceAdjustment": 0},
                {"sku": _unique("VAR"), "variantName": "Same", "priceAdjustment": 0},
            ],
            422,
            "duplicate_variant_name",
        ),
        ({"sku": "VAR-OBJ", "variantName": "Not a list"}, 422, "invalid_input"),
    ],
    ids=[
        "empty-list",
        "third-missing-sku",
        "third-float-adjustment",
        "third-string-adjustment",
        "third-below-zero-total",
        "third-sku-taken",
        "sku-twice-in-request",
        "name-twice-in-request",
        "object-not-list",
    ],
)
def test_variants_are_created_all_or_none(
    platform: Platform,
    factory_id: str,
    category_id: str,
    taken_variant_sku: str,
    variants: list[dict],
    status: int,
    code: str,
) -> None:
    product = _create_product(platform, factory_id, category_id)
    before = snapshot(platform, "product")
    assert_problem(_add_variants(platform, product["id"], variants), status, code)
    assert snapshot(platform, "product") == before
    listed = platform.client("product").get(
        f"/api/products/{product['id']}/variants", headers=admin_headers(platform)
    )
    assert listed.json() == []


def test_price_adjustment_defaults_to_zero(
    platform: Platform, factory_id: str, category_id: str
) -> None:
    product = _create_product(platform, factory_id, category_id)
    added = _add_variants(platform, product["id"], [{"sku": _unique("VAR"), "variantName": "One"}])
    assert added.status_code == 201, added.text
    assert added.json()[0]["priceAdjustment"] == 0


def test_a_variant_name_is_unique_within_its_product(
    platform: Platform, factory_id: str, category_id: str
) -> None:
    product = _create_product(platform, factory_id, category_id)
    first = [{"sku": _unique("VAR"), "variantName": "Small", "priceAdjustment": 0}]
    assert _add_variants(platform, product["id"], first).status_code == 201
    before = snapshot(platform, "product")
    again = [{"sku": _unique("VAR"), "variantName": "Small", "priceAdjustment": 0}]
    assert_problem(_add_variants(platform, product["id"], again), 409, "variant_name_taken")
    assert snapshot(platform, "product") == before
    other_product = _create_product(platform, factory_id, category_id)
    assert _add_variants(platform, other_product["id"], again).status_code == 201


def test_variants_of_an_unknown_product_are_404(platform: Platform) -> None:
    before = snapshot(platform, "product")
    assert_problem(_add_variants(platform, str(uuid.uuid4()), _variants(1)), 404)
    assert snapshot(platform, "product") == before


# --- images --------------------------------------------------------------------------------------


def test_images_are_appended_in_order_unless_placed(
    platform: Platform, factory_id: str, category_id: str
) -> None:
    product = _create_product(platform, factory_id, category_id)
    path = f"/api/products/{product['id']}/images"
    client = platform.client("product")

    def add(body: dict) -> dict:
        response = client.post(path, json=body, headers=admin_headers(platform))
        assert response.status_code == 201, response.text
        return response.json()

    first = add({"url": "https://cdn.laku.id/kaos/1.jpg"})
    second = add({"url": "https://cdn.laku.id/kaos/2.jpg"})
    cover = add({"url": "https://cdn.laku.id/kaos/cover.jpg", "sortOrder": 0})
    assert (first["sortOrder"], second["sortOrder"]) == (0, 1)
    assert first["url"] == "https://cdn.laku.id/kaos/1.jpg"

    detail = client.get(f"/api/products/{product['id']}", headers=admin_headers(platform)).json()
    assert {image["id"] for image in detail["images"][:2]} == {first["id"], cover["id"]}
    assert detail["images"][2]["id"] == second["id"]

    before = snapshot(platform, "product")
    for bad in (
        {"url": "not a url"},
        {"url": "ftp://cdn.laku.id/x.jpg"},
        {"url": "https://cdn.laku.id/x.jpg", "sortOrder": -1},
        {"url": "https://cdn.laku.id/x.jpg", "sortOrder": "1"},
        {},
    ):
        assert_problem(client.post(path, json=bad, headers=admin_headers(platform)), 422)
    missing = f"/api/products/{uuid.uuid4()}/images"
    assert_problem(
        client.post(
            missing, json={"url": "https://cdn.laku.id/x.jpg"}, headers=admin_headers(platform)
        ),
        404,
    )
    assert snapshot(platform, "product") == before


# --- editing -------------------------------------------------------------------------------------


def _patch(platform: Platform, product_id: str, body: object) -> httpx.Response:
    return platform.client("product").patch(
        f"/api/products/{product_id}", json=body, headers=admin_headers(platform)
    )


def test_patch_changes_only_what_is_sent(
    platform: Platform, factory_id: str, category_id: str
) -> None:
    product = _create_product(platform, factory_id, category_id, description="Katun combed 30s")
    other_category = _create_category(platform, "Celana")
    changed = _patch(
        platform,
        product["id"],
        {"name": "Kaos Premium", "basePrice": 160000, "categoryId": other_category["id"]},
    )
    assert changed.status_code == 200, changed.text
    after = changed.json()
    assert (after["name"], after["basePrice"], after["categoryId"]) == (
        "Kaos Premium",
        160000,
        other_category["id"],
    )
    unchanged = ("sku", "costPrice", "moq", "groupDurationHours", "description", "createdAt")
    assert {key: after[key] for key in unchanged} == {key: product[key] for key in unchanged}
    assert datetime.fromisoformat(after["updatedAt"]) > datetime.fromisoformat(product["updatedAt"])

    cleared = _patch(platform, product["id"], {"description": None})
    assert cleared.status_code == 200
    assert cleared.json()["description"] is None


def test_invalid_patch_changes_nothing(
    platform: Platform, factory_id: str, category_id: str
) -> None:
    product = _create_product(platform, factory_id, category_id, basePrice=20000, costPrice=10000)
    cheap = [{"sku": _unique("VAR"), "variantName": "Kecil", "priceAdjustment": -15000}]
    assert _add_variants(platform, product["id"], cheap).status_code == 201
    before = snapshot(platform, "product")
    cases: list[tuple[object, int, str]] = [
        ({}, 422, "invalid_input"),
        ({"name": None}, 422, "invalid_input"),
        ({"basePrice": None}, 422, "invalid_input"),
        ({"sku": "NEW-SKU"}, 422, "invalid_input"),
        ({"factoryId": factory_id}, 422, "invalid_input"),
        ({"status": "published"}, 422, "invalid_input"),
        ({"basePrice": "20000"}, 422, "invalid_input"),
        ({"costPrice": 10000.5}, 422, "invalid_input"),
        ({"costPrice": 20001}, 422, "cost_above_price"),
        ({"basePrice": 9000}, 422, "cost_above_price"),
        ({"basePrice": 14999, "costPrice": 5000}, 422, "negative_variant_price"),
        ({"categoryId": str(uuid.uuid4())}, 422, "unknown_category"),
        ([{"name": "x"}], 422, "invalid_input"),
    ]
    for body, status, code in cases:
        assert_problem(_patch(platform, product["id"], body), status, code)
    assert_problem(_patch(platform, str(uuid.uuid4()), {"name": "x"}), 404, "product_not_found")
    assert snapshot(platform, "product") == before


# --- who may do what -----------------------------------------------------------------------------


def _admin_writes(
    product_id: str, factory_id: str, category_id: str
) -> list[tuple[str, str, object]]:
    return [
        ("POST", "/api/categories", {"name": "Sepatu"}),
        ("POST", "/api/products", _product_body(factory_id, category_id)),
        ("PATCH", f"/api/products/{product_id}", {"name": "Changed"}),
        ("POST", f"/api/products/{product_id}/variants", _variants(1)),
        ("POST", f"/api/products/{product_id}/images", {"url": "https://cdn.laku.id/a.jpg"}),
        ("POST", f"/api/products/{product_id}/publish", None),
        ("POST", f"/api/products/{product_id}/archive", None),
    ]


def test_writes_need_an_admin(platform: Platform, factory_id: str, category_id: str) -> None:
    product = _create_product(platform, factory_id, category_id)
    _add_variants(platform, product["id"], _variants(1))
    buyer = platform.new_buyer()
    client = platform.client("product")
    before = snapshot(platform, "product")
    for method, path, body in _admin_writes(product["id"], factory_id, category_id):
        assert_problem(client.request(method, path, json=body), 401)
        assert_problem(client.request(method, path, json=body, headers=buyer.headers), 403)
    assert snapshot(platform, "product") == before


# --- for other services ---------------------------------------------------------------------------


async def test_product_client_sees_drafts_and_reports_missing_products(
    platform: Platform, factory_id: str, category_id: str
) -> None:
    draft = _create_product(platform, factory_id, category_id)
    _add_variants(platform, draft["id"], _variants(2))
    async with httpx.AsyncClient(timeout=10.0) as http:
        tokens = platform.service_token_source(http, "group-buying")
        client = ProductClient(platform.url("product"), http, tokens)
        fetched = await client.get_product(uuid.UUID(draft["id"]))
        assert isinstance(fetched, ProductDetailOut)
        assert str(fetched.id) == draft["id"]
        assert fetched.cost_price == 80000
        assert [v.price_adjustment for v in fetched.variants] == [0, 1000]
        assert await client.get_product(uuid.uuid4()) is None


def test_openapi_documents_every_endpoint(platform: Platform) -> None:
    spec = platform.client("product").get("/openapi.json").json()
    operations = {
        (method.upper(), path): operation
        for path, methods in spec["paths"].items()
        for method, operation in methods.items()
    }
    expected = {
        ("POST", "/api/categories"),
        ("GET", "/api/categories"),
        ("POST", "/api/products"),
        ("GET", "/api/products"),
        ("GET", "/api/products/{product_id}"),
        ("PATCH", "/api/products/{product_id}"),
        ("POST", "/api/products/{product_id}/publish"),
        ("POST", "/api/products/{product_id}/archive"),
        ("POST", "/api/products/{product_id}/variants"),
        ("GET", "/api/products/{product_id}/variants"),
        ("POST", "/api/products/{product_id}/images"),
    }
    assert expected <= set(operations)
    bodyless = {"/publish", "/archive"}
    for (method, path), operation in operations.items():
        if not path.startswith("/api/"):
            continue
        success = next(r for code, r in operation["responses"].items() if code.startswith("2"))
        assert success["content"]["application/json"]["schema"], (method, path)
        if method != "GET" and not path.endswith(tuple(bodyless)):
            assert operation["requestBody"]["content"]["application/json"]["schema"], path
        assert "application/problem+json" in operation["responses"]["422"]["content"]
    product_create = spec["components"]["schemas"]["ProductCreate"]
    assert set(product_create["required"]) == set(REQUIRED_PRODUCT_FIELDS)


def test_concurrent_creations_with_one_sku_make_one_product(
    platform: Platform, factory_id: str, category_id: str
) -> None:
    body = _product_body(factory_id, category_id)
    before_count = _product_count(platform)

    def create(_: int) -> httpx.Response:
        with httpx.Client(base_url=platform.url("product"), timeout=10.0) as client:
            return client.post("/api/products", json=body, headers=admin_headers(platform))

    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(create, range(8)))
    assert sorted(response.status_code for response in responses) == [201] + [409] * 7
    for response in responses:
        if response.status_code == 409:
            assert_problem(response, 409, "sku_taken")
    assert _product_count(platform) == before_count + 1


def test_concurrent_variants_with_one_sku_on_two_products(
    platform: Platform, factory_id: str, category_id: str
) -> None:
    products = [_create_product(platform, factory_id, category_id) for _ in range(6)]
    variants = _variants(1)

    def add(product: dict) -> httpx.Response:
        with httpx.Client(base_url=platform.url("product"), timeout=10.0) as client:
            return client.post(
                f"/api/products/{product['id']}/variants",
                json=variants,
                headers=admin_headers(platform),
            )

    with ThreadPoolExecutor(max_workers=len(products)) as pool:
        responses = list(pool.map(add, products))
    assert sorted(response.status_code for response in responses) == [201] + [409] * 5
    for response in responses:
        if response.status_code == 409:
            assert_problem(response, 409, "sku_taken")
