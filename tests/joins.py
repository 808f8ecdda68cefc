"""Joining a group buy one request at a time, as a buyer's app does, and reading back what the
join left: the seed's session body (step 2), a join's raw answer, paying its invoice in the Xendit
sandbox, the participants and the stock still available."""

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from laku.testing.catalog import TIERS, SeedCatalog, created
from laku.testing.platform import Account, Platform
from tests.support import admin_headers, eventually


def iso_utc(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def session_body(
    catalog: SeedCatalog, *, target_moq: int = 100, ends_in: timedelta = timedelta(hours=6)
) -> dict[str, Any]:
    """Seed step 2's body for the catalog's T-shirt."""
    end = datetime.now(UTC) + ends_in
    return {
        "productId": catalog.product_id,
        "factoryId": catalog.factory_id,
        "targetMoq": target_moq,
        "groupPrice": TIERS["priceTier25"],
        **TIERS,
        "endTime": iso_utc(end),
        "estimatedCompletionDate": iso_utc(end + timedelta(days=15)),
    }


def open_seed_session(platform: Platform, catalog: SeedCatalog, **terms: Any) -> dict[str, Any]:
    return created(
        platform.client("group-buying").post(
            "/api/group-buying",
            json=session_body(catalog, **terms),
            headers=admin_headers(platform),
        )
    )


def join_request(
    platform: Platform, buyer: Account, session_id: str, variant_id: str, quantity: Any, **extra
) -> httpx.Response:
    return platform.client("group-buying").post(
        f"/api/group-buying/{session_id}/join",
        json={"quantity": quantity, "variantId": variant_id, **extra},
        headers=buyer.headers,
    )


def join_created(
    platform: Platform, buyer: Account, session: dict[str, Any], variant_id: str, quantity: int
) -> dict[str, Any]:
    return created(join_request(platform, buyer, session["id"], variant_id, quantity))


def available_stock(platform: Platform, catalog: SeedCatalog) -> dict[str, int]:
    response = platform.client("warehouse").get(
        "/api/inventory", params={"productId": catalog.product_id}, headers=admin_headers(platform)
    )
    assert response.status_code == 200, response.text
    [product] = response.json()
    sizes = {variant_id: size for size, variant_id in catalog.variants.items()}
    return {sizes[v["variantId"]]: v["availableQuantity"] for v in product["variants"]}


def all_participants(
    platform: Platform, session_id: str, status: str | None = None
) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    while True:
        params: dict[str, Any] = {"limit": 100, "offset": len(items)}
        if status:
            params["status"] = status
        response = platform.client("group-buying").get(
            f"/api/group-buying/{session_id}/participants",
            params=params,
            headers=admin_headers(platform),
        )
        assert response.status_code == 200, response.text
        page = response.json()
        items += page["items"]
        if len(items) >= page["total"]:
            return items


def participant_of(platform: Platform, session_id: str, participant_id: str) -> dict[str, Any]:
    [found] = [p for p in all_participants(platform, session_id) if p["id"] == participant_id]
    return found


def payment_by_id(platform: Platform, buyer: Account, payment_id: str) -> dict[str, Any]:
    response = platform.client("payment").get(f"/api/payments/{payment_id}", headers=buyer.headers)
    assert response.status_code == 200, response.text
    return response.json()


def invoice_id_of(platform: Platform, payment_code: str) -> str:
    invoices = platform.client("xendit-sandbox").get("/sandbox/invoices").json()
    [invoice] = [i for i in invoices if i["external_id"] == payment_code]
    return invoice["id"]


def pay_invoice(platform: Platform, buyer: Account, joined: dict[str, Any]) -> str:
    """The buyer pays the join's invoice in the Xendit sandbox; returns the invoice id."""
    payment = payment_by_id(platform, buyer, joined["participant"]["paymentId"])
    invoice_id = invoice_id_of(platform, payment["paymentCode"])
    paid = platform.client("xendit-sandbox").post(f"/sandbox/invoices/{invoice_id}/pay")
    assert paid.status_code == 200, paid.text
    return invoice_id


def paid_through(
    platform: Platform, buyer: Account, session: dict[str, Any], joined: dict[str, Any]
) -> dict[str, Any]:
    """Pays and waits until group-buying has the participant paid."""
    pay_invoice(platform, buyer, joined)
    participant_id = joined["participant"]["id"]
    paid = eventually(
        lambda: (
            (p := participant_of(platform, session["id"], participant_id))["status"] == "paid" and p
        )
    )
    assert paid, participant_of(platform, session["id"], participant_id)
    return paid
