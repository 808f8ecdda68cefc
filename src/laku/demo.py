"""Demo data `laku up` loads once every service is ready, so a newcomer can click through a
group buy at once: the seed's factory, T-shirt, bundle and stock (steps 1.1-1.4), an open group
buy of it (step 2), a buyer with an address and a login for the factory's staff.

It goes through the public API as an admin would, every write with a fixed `Idempotency-Key`:
loading again (each `make up`) replays the first answers and creates nothing twice, and a load
cut short is completed by the next one.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx

from laku.core.services import service_url
from laku.core.settings import Settings

BUYER_EMAIL = "buyer@laku.id"
BUYER_PASSWORD = "laku-buyer-demo"
FACTORY_EMAIL = "factory@laku.id"
FACTORY_PASSWORD = "laku-factory-demo"
# The seed's session needs 100 units; the seed's warehouse holds 24. The demo group buy is one a
# newcomer can fill alone.
TARGET_MOQ = 12

FACTORY = {
    "name": "Konveksi Bandung",
    "ownerName": "Pak Asep",
    "phone": "+6281234567890",
    "email": "asep@konveksi-bandung.id",
    "address": "Jl. Soekarno-Hatta 1, Bandung",
    "city": "Bandung",
    "postalCode": "40123",
}
VARIANTS = [
    {"sku": "TSHIRT-S", "variantName": "Small", "priceAdjustment": 0},
    {"sku": "TSHIRT-M", "variantName": "Medium", "priceAdjustment": 5000},
    {"sku": "TSHIRT-L", "variantName": "Large", "priceAdjustment": 10000},
]
TIERS = {
    "groupPrice": 95000,
    "priceTier25": 95000,
    "priceTier50": 85000,
    "priceTier75": 75000,
    "priceTier100": 65000,
}


@dataclass(frozen=True)
class DemoData:
    session_code: str
    session_url: str
    buyer_email: str
    buyer_password: str
    factory_email: str
    factory_password: str


class DemoLoadError(Exception):
    """A demo write was refused; the platform runs on without (all) demo data."""


class _Api:
    def __init__(self, http: httpx.Client, settings: Settings):
        self._http = http
        self._settings = settings

    def url(self, service: str) -> str:
        return service_url(service, self._settings)

    def post(
        self,
        service: str,
        path: str,
        body: Any = None,
        *,
        key: str | None,
        token: str | None = None,
    ) -> Any:
        headers = {"Idempotency-Key": f"demo:{key}"} if key else {}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        response = self._http.post(self.url(service) + path, json=body, headers=headers)
        if not response.is_success:
            raise DemoLoadError(
                f"{service} {path} answered {response.status_code}: {response.text}"
            )
        return response.json()

    def login(self, email: str, password: str) -> str:
        # No key: a replayed login would hand back a token that has expired since.
        body = {"email": email, "password": password}
        return self.post("auth", "/api/auth/login", body, key=None)["accessToken"]


def load_demo(settings: Settings) -> DemoData:
    """Refused in production (design 14): demo accounts have published passwords."""
    if settings.env != "development":
        raise DemoLoadError("demo data is loaded in development only (LAKU_ENV=production)")
    if settings.admin_password is None:
        raise DemoLoadError("LAKU_ADMIN_PASSWORD is not set")
    with httpx.Client(timeout=30.0) as http:
        return _load(_Api(http, settings), settings, settings.admin_password.get_secret_value())


def _load(api: _Api, settings: Settings, admin_password: str) -> DemoData:
    admin = api.login(settings.admin_email, admin_password)
    factory = api.post("factory", "/api/factories", FACTORY, key="factory", token=admin)
    api.post(
        "factory",
        f"/api/factories/{factory['id']}/users",
        {"email": FACTORY_EMAIL, "password": FACTORY_PASSWORD, "name": "Pak Asep"},
        key="factory-user",
        token=admin,
    )
    category = api.post(
        "product",
        "/api/categories",
        {"name": "Pakaian", "slug": "pakaian"},
        key="category",
        token=admin,
    )
    product = api.post(
        "product",
        "/api/products",
        {
            "factoryId": factory["id"],
            "categoryId": category["id"],
            "sku": "TSHIRT-001",
            "name": "Premium T-Shirt",
            "basePrice": 150000,
            "costPrice": 80000,
            "moq": 100,
            "groupDurationHours": 168,
        },
        key="product",
        token=admin,
    )
    variants = api.post(
        "product", f"/api/products/{product['id']}/variants", VARIANTS, key="variants", token=admin
    )
    api.post("product", f"/api/products/{product['id']}/publish", key="publish", token=admin)
    api.post(
        "group-buying",
        "/api/admin/bundle-composition",
        [
            {"productId": product["id"], "variantId": variant["id"], "unitsInBundle": 4}
            for variant in variants
        ],
        key="bundle",
        token=admin,
    )
    api.post(
        "warehouse",
        "/api/inventory",
        [
            {
                "productId": product["id"],
                "variantId": variant["id"],
                "quantity": 8,
                "maxStockLevel": 8,
                "reorderThreshold": 4,
            }
            for variant in variants
        ],
        key="inventory",
        token=admin,
    )
    # Derived from the product's creation, so the body (and its key) is the same on every load.
    end = datetime.fromisoformat(product["createdAt"]) + timedelta(
        hours=product["groupDurationHours"]
    )
    session = api.post(
        "group-buying",
        "/api/group-buying",
        {
            "productId": product["id"],
            "factoryId": factory["id"],
            "targetMoq": TARGET_MOQ,
            **TIERS,
            "endTime": end.isoformat(),
            "estimatedCompletionDate": (end + timedelta(days=14)).isoformat(),
        },
        key="session",
        token=admin,
    )
    api.post(
        "auth",
        "/api/auth/register",
        {
            "email": BUYER_EMAIL,
            "password": BUYER_PASSWORD,
            "name": "Siti Rahayu",
            "phone": "+6281298765432",
        },
        key="buyer",
    )
    buyer = api.login(BUYER_EMAIL, BUYER_PASSWORD)
    api.post(
        "address",
        "/api/addresses",
        {
            "label": "Rumah",
            "recipientName": "Siti Rahayu",
            "phone": "+6281298765432",
            "street": "Jl. Kemang Raya 10",
            "city": "Jakarta Selatan",
            "province": "DKI Jakarta",
            "postalCode": "12730",
        },
        key="buyer-address",
        token=buyer,
    )
    return DemoData(
        session_code=session["sessionCode"],
        session_url=f"{api.url('group-buying')}/api/group-buying/{session['sessionCode']}",
        buyer_email=BUYER_EMAIL,
        buyer_password=BUYER_PASSWORD,
        factory_email=FACTORY_EMAIL,
        factory_password=FACTORY_PASSWORD,
    )
