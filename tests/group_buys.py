"""A group buy driven over HTTP as the seed's steps 2-8 drive it: opened, joined and paid through
the real saga and the Xendit sandbox, ended, closed; and what its buyers, stock and orders show.

A session's end time is moved into the past in its own table: a test stands in for the clock
instead of sleeping until the session ends (its invoices, due at the original end time, stay
payable until the close)."""

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from laku.testing.catalog import TIERS, SeedCatalog, created
from laku.testing.platform import Account, Platform
from tests.support import admin_headers, eventually, ok

OPEN = ("forming", "active", "moq_reached")


def open_group_buy(
    platform: Platform,
    catalog: SeedCatalog,
    target_moq: int,
    tiers: dict[str, int] = TIERS,
    ends_in: timedelta = timedelta(hours=6),
) -> dict[str, Any]:
    # Far ahead by default: the tests end sessions themselves (`end_now`).
    end = datetime.now(UTC) + ends_in
    return created(
        platform.client("group-buying").post(
            "/api/group-buying",
            json={
                "productId": catalog.product_id,
                "factoryId": catalog.factory_id,
                "targetMoq": target_moq,
                **tiers,
                "endTime": end.isoformat(),
                "estimatedCompletionDate": (end + timedelta(days=14)).isoformat(),
            },
            headers=admin_headers(platform),
        )
    )


def session_of(platform: Platform, session_id: str) -> dict[str, Any]:
    return ok(platform.client("group-buying").get(f"/api/group-buying/{session_id}"))


def participants_of(platform: Platform, session_id: str) -> dict[str, dict[str, Any]]:
    page = ok(
        platform.client("group-buying").get(
            f"/api/group-buying/{session_id}/participants",
            params={"limit": 100},
            headers=admin_headers(platform),
        )
    )
    return {participant["id"]: participant for participant in page["items"]}


@dataclass(frozen=True)
class Joined:
    buyer: Account
    participant: dict[str, Any]

    @property
    def id(self) -> str:
        return self.participant["id"]

    @property
    def payment_id(self) -> str:
        return self.participant["paymentId"]


def join_group_buy(
    platform: Platform,
    session: dict[str, Any],
    variant_id: str,
    quantity: int,
    *,
    pay: bool,
    buyer: Account | None = None,
) -> Joined:
    """A new buyer (or `buyer`) joins; with `pay`, pays in the Xendit sandbox and waits until
    group-buying has the participant paid."""
    buyer = buyer or platform.new_buyer()
    joined = created(
        platform.client("group-buying").post(
            f"/api/group-buying/{session['id']}/join",
            json={"variantId": variant_id, "quantity": quantity},
            headers=buyer.headers,
        )
    )
    result = Joined(buyer, joined["participant"])
    if pay:
        paid = platform.client("xendit-sandbox").post(
            f"/sandbox/invoices/{invoice_of(platform, result)['id']}/pay"
        )
        assert paid.status_code == 200, paid.text
        assert eventually(
            lambda: participants_of(platform, session["id"])[result.id]["status"] == "paid"
        )
    return result


def payment_of(platform: Platform, joined: Joined) -> dict[str, Any]:
    return ok(
        platform.client("payment").get(
            f"/api/payments/{joined.payment_id}", headers=joined.buyer.headers
        )
    )


def invoice_of(platform: Platform, joined: Joined) -> dict[str, Any]:
    code = payment_of(platform, joined)["paymentCode"]
    invoices = ok(platform.client("xendit-sandbox").get("/sandbox/invoices"))
    [invoice] = [invoice for invoice in invoices if invoice["external_id"] == code]
    return invoice


def wallet_credits(platform: Platform, buyer: Account) -> list[dict[str, Any]]:
    page = ok(
        platform.client("wallet").get(
            "/api/wallets/me/transactions", params={"limit": 100}, headers=buyer.headers
        )
    )
    return [t for t in page["items"] if t["direction"] == "credit"]


def buyer_orders(platform: Platform, buyer: Account) -> list[dict[str, Any]]:
    page = ok(
        platform.client("order").get("/api/orders", params={"limit": 100}, headers=buyer.headers)
    )
    return page["items"]


def session_orders(platform: Platform, session_id: str) -> list[dict[str, Any]]:
    page = ok(
        platform.client("order").get(
            "/api/orders",
            params={"sessionId": session_id, "limit": 100},
            headers=admin_headers(platform),
        )
    )
    return page["items"]


def stock_of(platform: Platform, catalog: SeedCatalog) -> dict[str, dict[str, int]]:
    [product] = ok(
        platform.client("warehouse").get(
            "/api/inventory",
            params={"productId": catalog.product_id},
            headers=admin_headers(platform),
        )
    )
    sizes = {variant_id: size for size, variant_id in catalog.variants.items()}
    return {
        sizes[v["variantId"]]: {
            "quantity": v["quantity"],
            "reserved": v["reservedQuantity"],
            "available": v["availableQuantity"],
        }
        for v in product["variants"]
    }


def purchase_orders_of(platform: Platform, catalog: SeedCatalog) -> list[dict[str, Any]]:
    page = ok(
        platform.client("warehouse").get(
            "/api/purchase-orders",
            params={"productId": catalog.product_id},
            headers=admin_headers(platform),
        )
    )
    return page["items"]


def end_now(platform: Platform, session_id: str) -> None:
    """The session's end time passes (see the module's docstring)."""
    platform.sql(
        "UPDATE group_buying.group_buying_sessions SET end_time = now() - interval '1 second' "
        "WHERE id = $1",
        uuid.UUID(session_id),
    )


def process_expired(platform: Platform) -> httpx.Response:
    return platform.client("group-buying").post(
        "/api/group-buying/process-expired", headers=admin_headers(platform), timeout=60
    )


def close_group_buy(platform: Platform, session_id: str, timeout: float = 30.0) -> dict[str, Any]:
    """Runs process-expired until the session's close is over; returns the session then."""

    def closed() -> dict[str, Any] | None:
        response = process_expired(platform)
        assert response.status_code == 200, response.text
        session = session_of(platform, session_id)
        return None if session["status"] in OPEN else session

    session = eventually(closed, timeout=timeout, every=0.5)
    assert session, session_of(platform, session_id)
    return session
