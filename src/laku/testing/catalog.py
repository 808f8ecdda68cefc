"""The seed's catalog, built over HTTP as an admin would: a factory, the T-shirt (steps 1.1-1.2),
its bundle composition (1.3) and its warehouse inventory (1.4)."""

import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from laku.testing.platform import Platform, bearer

SIZES = ("S", "M", "L")
SEED_VARIANTS = [
    {"sku": "TSHIRT-S", "variantName": "Small", "priceAdjustment": 0},
    {"sku": "TSHIRT-M", "variantName": "Medium", "priceAdjustment": 5000},
    {"sku": "TSHIRT-L", "variantName": "Large", "priceAdjustment": 10000},
]
# The seed's price tiers (step 2), as a group buy's creation body names them.
TIERS = {"priceTier25": 95000, "priceTier50": 85000, "priceTier75": 75000, "priceTier100": 65000}


@dataclass(frozen=True)
class SeedCatalog:
    factory_id: str
    factory_phone: str
    product_id: str
    product_sku: str
    variants: dict[str, str]  # size -> variant id
    variant_skus: dict[str, str]  # size -> variant sku


def created(response: httpx.Response) -> Any:
    assert response.status_code == 201, response.text
    return response.json()


def _suffix() -> str:
    return uuid.uuid4().hex[:8].upper()


def create_seed_catalog(
    platform: Platform,
    *,
    bundle: dict[str, int] | None = None,
    stock: dict[str, int] | None = None,
    max_stock_level: int = 8,
    reorder_threshold: int = 4,
) -> SeedCatalog:
    """A fresh factory and T-shirt. `bundle` and `stock` default to the seed's 4/4/4 and 8/8/8;
    pass an empty dict to skip that step."""
    admin = bearer(platform.admin_token)

    def admin_creates(service: str, path: str, body: Any) -> Any:
        return created(platform.client(service).post(path, json=body, headers=admin))

    suffix = _suffix()
    phone = f"+62812{int(suffix, 16) % 10**7:07d}"
    factory = admin_creates(
        "factory",
        "/api/factories",
        {
            "name": f"Konveksi Maju {suffix}",
            "ownerName": "Budi Santoso",
            "phone": phone,
            "address": "Jl. Industri No. 5, Bandung",
            "postalCode": "40123",
        },
    )
    category = admin_creates(
        "product", "/api/categories", {"name": "Pakaian", "slug": f"pakaian-{suffix.lower()}"}
    )
    product = admin_creates(
        "product",
        "/api/products",
        {
            "factoryId": factory["id"],
            "categoryId": category["id"],
            "sku": f"TSHIRT-001-{suffix}",
            "name": "Premium T-Shirt",
            "basePrice": 150000,
            "costPrice": 80000,
            "moq": 100,
            "groupDurationHours": 168,
        },
    )
    variants = admin_creates(
        "product",
        f"/api/products/{product['id']}/variants",
        [{**v, "sku": f"{v['sku']}-{suffix}"} for v in SEED_VARIANTS],
    )
    ids = {size: v["id"] for size, v in zip(SIZES, variants, strict=True)}
    skus = {size: v["sku"] for size, v in zip(SIZES, variants, strict=True)}
    bundle = {"S": 4, "M": 4, "L": 4} if bundle is None else bundle
    if bundle:
        admin_creates(
            "group-buying",
            "/api/admin/bundle-composition",
            [
                {"productId": product["id"], "variantId": ids[size], "unitsInBundle": units}
                for size, units in bundle.items()
            ],
        )
    stock = {"S": 8, "M": 8, "L": 8} if stock is None else stock
    if stock:
        admin_creates(
            "warehouse",
            "/api/inventory",
            [
                {
                    "productId": product["id"],
                    "variantId": ids[size],
                    "quantity": quantity,
                    "maxStockLevel": max_stock_level,
                    "reorderThreshold": reorder_threshold,
                }
                for size, quantity in stock.items()
            ],
        )
    return SeedCatalog(factory["id"], phone, product["id"], product["sku"], ids, skus)
