"""The seed's whole flow, steps 1 to 10, over HTTP against every service as its own process and
the providers' sandboxes, checking each state on the way.

Where the seed's figures cannot all hold at once, the test keeps the seed's warehouse (8/8/8, max
8, reorder at 4, bundles of 4/4/4) and its tier prices, and sets the session's MOQ to the 7
Medium shirts two buyers take (5, then 2): the seed's "Inventory Flow Example" then plays out
exactly inside the group buy, and its "Tier Refund Calculation" (95,000 -> 65,000, 30,000 a unit)
too: Medium joins at the tier price, its catalog adjustment is not added (design 7). The seed's
join body (5 M at 95,000, 475,000) and rates body (40123 -> 12190) are sent word for word.
"""

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from laku.testing.platform import Account, Platform, bearer
from tests.audits import laku_audit, quiet_audit
from tests.group_buys import close_group_buy, end_now
from tests.messages import PushBrowser, pushes_received
from tests.support import eventually, ok


@pytest.fixture(scope="module")
def platform(own_platform: Platform) -> Platform:
    """The whole platform is audited: a platform of this module's own."""
    return own_platform


MOQ = 7


class Flow:
    """The actors of one run and what they see."""

    def __init__(self, platform: Platform):
        self.platform = platform
        self.admin = bearer(platform.admin_token)
        self.suffix = uuid.uuid4().hex[:6].upper()

    def api(self, service: str) -> httpx.Client:
        return self.platform.client(service)

    def stock(self, product_id: str, variants: dict[str, str]) -> dict[str, dict[str, Any]]:
        [product] = ok(
            self.api("warehouse").get(
                "/api/inventory", params={"productId": product_id}, headers=self.admin
            )
        )
        sizes = {variant_id: size for size, variant_id in variants.items()}
        return {sizes[v["variantId"]]: v for v in product["variants"]}

    def purchase_orders(self, product_id: str, headers: dict[str, str]) -> list[dict[str, Any]]:
        page = ok(
            self.api("warehouse").get(
                "/api/purchase-orders", params={"productId": product_id}, headers=headers
            )
        )
        return page["items"]

    def whatsapp_to(self, phone: str) -> list[dict[str, Any]]:
        messages = ok(self.api("whatsapp-sandbox").get("/sandbox/messages"))
        return [m for m in messages if m["to"].lstrip("+") == phone.lstrip("+")]

    def emails_to(self, email: str) -> list[dict[str, Any]]:
        emails = ok(self.api("smtp-sandbox").get("/sandbox/emails"))
        return [e for e in emails if email in e["to"]]

    def inbox(self, buyer: Account) -> list[str]:
        page = ok(
            self.api("notification").get(
                "/api/notifications/me", params={"limit": 100}, headers=buyer.headers
            )
        )
        return [n["text"] for n in page["items"]]

    def session(self, session_id: str) -> dict[str, Any]:
        return ok(self.api("group-buying").get(f"/api/group-buying/{session_id}"))

    def participant(self, session_id: str, participant_id: str) -> dict[str, Any]:
        page = ok(
            self.api("group-buying").get(
                f"/api/group-buying/{session_id}/participants",
                params={"limit": 100},
                headers=self.admin,
            )
        )
        [found] = [p for p in page["items"] if p["id"] == participant_id]
        return found

    def payment(self, payment_id: str, headers: dict[str, str]) -> dict[str, Any]:
        return ok(self.api("payment").get(f"/api/payments/{payment_id}", headers=headers))

    def balance(self, buyer: Account) -> int:
        return ok(self.api("wallet").get("/api/wallets/me", headers=buyer.headers))["balance"]

    def register(self, name: str, phone: str, postal_code: str) -> Account:
        email = f"{name.lower()}-{self.suffix.lower()}@laku.id"
        ok(
            self.api("auth").post(
                "/api/auth/register",
                json={"email": email, "password": "buyer-password", "name": name, "phone": phone},
            ),
            201,
        )
        login = ok(
            self.api("auth").post(
                "/api/auth/login", json={"email": email, "password": "buyer-password"}
            )
        )
        me = ok(self.api("auth").get("/api/auth/me", headers=bearer(login["accessToken"])))
        buyer = Account(me["id"], email, login["accessToken"])
        ok(
            self.api("address").post(
                "/api/addresses",
                json={
                    "label": "Rumah",
                    "recipientName": name,
                    "phone": phone,
                    "street": "Jl. Kemang Raya 10",
                    "city": "Jakarta Selatan",
                    "province": "DKI Jakarta",
                    "postalCode": postal_code,
                },
                headers=buyer.headers,
            ),
            201,
        )
        return buyer

    def pay(self, payment_url: str, payment_id: str, buyer: Account) -> None:
        """The buyer opens the checkout page and pays."""
        page = httpx.get(payment_url, timeout=10)
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        code = self.payment(payment_id, buyer.headers)["paymentCode"]
        invoices = ok(self.api("xendit-sandbox").get("/sandbox/invoices"))
        [invoice] = [i for i in invoices if i["external_id"] == code]
        ok(self.api("xendit-sandbox").post(f"/sandbox/invoices/{invoice['id']}/pay"))


def test_the_seed_flow_from_setup_to_settlement(platform: Platform) -> None:
    flow = Flow(platform)
    admin = flow.admin
    started = datetime.now(UTC) - timedelta(seconds=5)

    # --- Step 1: admin product setup --------------------------------------------------------
    factory_phone = f"+62813{int(flow.suffix, 16) % 10**7:07d}"
    factory = ok(
        flow.api("factory").post(
            "/api/factories",
            json={
                "name": f"Konveksi Bandung {flow.suffix}",
                "ownerName": "Pak Asep",
                "phone": factory_phone,
                "address": "Jl. Soekarno-Hatta 1, Bandung",
                "postalCode": "40123",
            },
            headers=admin,
        ),
        201,
    )
    factory_staff_email = f"factory-{flow.suffix.lower()}@laku.id"
    ok(
        flow.api("factory").post(
            f"/api/factories/{factory['id']}/users",
            json={"email": factory_staff_email, "password": "factory-password", "name": "Asep"},
            headers=admin,
        ),
        201,
    )
    factory_staff = bearer(platform.login(factory_staff_email, "factory-password"))
    category = ok(
        flow.api("product").post(
            "/api/categories",
            json={"name": "Pakaian", "slug": f"pakaian-{flow.suffix.lower()}"},
            headers=admin,
        ),
        201,
    )
    # 1.1, the seed's body.
    product = ok(
        flow.api("product").post(
            "/api/products",
            json={
                "factoryId": factory["id"],
                "categoryId": category["id"],
                "sku": f"TSHIRT-001-{flow.suffix}",
                "name": "Premium T-Shirt",
                "basePrice": 150000,
                "costPrice": 80000,
                "moq": 100,
                "groupDurationHours": 168,
            },
            headers=admin,
        ),
        201,
    )
    assert product["status"] == "draft"
    # 1.2
    variants = ok(
        flow.api("product").post(
            f"/api/products/{product['id']}/variants",
            json=[
                {"sku": f"TSHIRT-S-{flow.suffix}", "variantName": "Small", "priceAdjustment": 0},
                {
                    "sku": f"TSHIRT-M-{flow.suffix}",
                    "variantName": "Medium",
                    "priceAdjustment": 5000,
                },
                {
                    "sku": f"TSHIRT-L-{flow.suffix}",
                    "variantName": "Large",
                    "priceAdjustment": 10000,
                },
            ],
            headers=admin,
        ),
        201,
    )
    size = dict(zip("SML", (v["id"] for v in variants), strict=True))
    assert (
        ok(flow.api("product").post(f"/api/products/{product['id']}/publish", headers=admin))[
            "status"
        ]
        == "published"
    )
    # 1.3
    ok(
        flow.api("group-buying").post(
            "/api/admin/bundle-composition",
            json=[
                {"productId": product["id"], "variantId": size[s], "unitsInBundle": 4}
                for s in "SML"
            ],
            headers=admin,
        ),
        201,
    )
    # 1.4
    ok(
        flow.api("warehouse").post(
            "/api/inventory",
            json=[
                {
                    "productId": product["id"],
                    "variantId": size[s],
                    "quantity": 8,
                    "maxStockLevel": 8,
                    "reorderThreshold": 4,
                }
                for s in "SML"
            ],
            headers=admin,
        ),
        201,
    )
    stock = flow.stock(product["id"], size)
    assert {s: v["availableQuantity"] for s, v in stock.items()} == {"S": 8, "M": 8, "L": 8}

    # --- Step 2: the group buy ----------------------------------------------------------------
    end = datetime.now(UTC) + timedelta(hours=6)
    session = ok(
        flow.api("group-buying").post(
            "/api/group-buying",
            json={
                "productId": product["id"],
                "factoryId": factory["id"],
                "targetMoq": MOQ,
                "groupPrice": 95000,
                "priceTier25": 95000,
                "priceTier50": 85000,
                "priceTier75": 75000,
                "priceTier100": 65000,
                "endTime": end.isoformat(),
                "estimatedCompletionDate": (end + timedelta(days=15)).isoformat(),
            },
            headers=admin,
        ),
        201,
    )
    session_id = session["id"]
    assert session["status"] == "forming" and session["sessionCode"]

    # --- Step 3: buyers join ------------------------------------------------------------------
    ani = flow.register("Ani", "+6281211110001", "12190")
    budi = flow.register("Budi", "+6281211110002", "40115")
    # Ani lets her browser show Laku's push notifications.
    ani_browser = PushBrowser(platform)
    ok(
        flow.api("notification").post(
            "/api/notifications/push-subscriptions",
            json=ani_browser.subscription(),
            headers=ani.headers,
        ),
        201,
    )
    availability = ok(
        flow.api("group-buying").get(f"/api/group-buying/{session_id}/variant-availability")
    )
    assert all(v["canJoin"] for v in availability["variants"]), availability
    joined_ani = ok(
        flow.api("group-buying").post(
            f"/api/group-buying/{session_id}/join",
            json={
                "userId": ani.id,
                "quantity": 5,
                "variantId": size["M"],
                "unitPrice": 95000,
                "totalPrice": 475000,
            },
            headers=ani.headers,
        ),
        201,
    )
    ani_part = joined_ani["participant"]
    assert ani_part["status"] == "pending_payment"
    # The seed's inventory example: 8S 3M 8L, M low, one purchase order of one bundle to the
    # factory, which is told on WhatsApp.
    stock = flow.stock(product["id"], size)
    assert {s: v["availableQuantity"] for s, v in stock.items()} == {"S": 8, "M": 3, "L": 8}
    assert stock["M"]["status"] == "low_stock"
    [reorder] = eventually(lambda: flow.purchase_orders(product["id"], admin))
    assert (reorder["reason"], reorder["bundles"]) == ("auto_reorder", 1)
    assert eventually(lambda: flow.whatsapp_to(factory_phone))

    # --- Step 4: payment through the Xendit checkout -------------------------------------------
    flow.pay(joined_ani["paymentUrl"], ani_part["paymentId"], ani)
    assert eventually(lambda: flow.participant(session_id, ani_part["id"])["status"] == "paid")
    payment = flow.payment(ani_part["paymentId"], ani.headers)
    assert (payment["status"], payment["escrowStatus"], payment["amount"]) == (
        "paid",
        "held",
        475000,
    )
    assert flow.session(session_id)["status"] == "active"

    # Fill 5/7 (71%): the next join pays tier 50.
    joined_budi = ok(
        flow.api("group-buying").post(
            f"/api/group-buying/{session_id}/join",
            json={"quantity": 2, "variantId": size["M"]},
            headers=budi.headers,
        ),
        201,
    )
    budi_part = joined_budi["participant"]
    assert (budi_part["unitPrice"], budi_part["totalPrice"]) == (85000, 170000)
    stock = flow.stock(product["id"], size)
    assert {s: v["availableQuantity"] for s, v in stock.items()} == {"S": 8, "M": 1, "L": 8}
    assert len(flow.purchase_orders(product["id"], admin)) == 1  # no second reorder
    flow.pay(joined_budi["paymentUrl"], budi_part["paymentId"], budi)
    assert eventually(lambda: flow.session(session_id)["status"] == "moq_reached")

    # --- Steps 5-7: the close -------------------------------------------------------------------
    end_now(platform, session_id)
    closed = close_group_buy(platform, session_id)
    assert closed["status"] == "success"
    # Final tier 100%: 65,000; Ani gets 95,000 - 65,000 = 30,000 a unit back, Budi 20,000.
    assert eventually(lambda: flow.balance(ani) == 5 * 30000)
    assert eventually(lambda: flow.balance(budi) == 2 * 20000)
    # 6: one order each, processing, at the final price.
    orders = {
        o["userId"]: o
        for o in ok(
            flow.api("order").get("/api/orders", params={"sessionId": session_id}, headers=admin)
        )["items"]
    }
    assert {uid: (o["status"], o["subtotal"]) for uid, o in orders.items()} == {
        ani.id: ("processing", 5 * 65000),
        budi.id: ("processing", 2 * 65000),
    }
    ani_order = orders[ani.id]
    assert ani_order["productSnapshot"]["variantName"] == "Medium"
    # 7: stock taken out of the warehouse; escrow released.
    stock = flow.stock(product["id"], size)
    assert {s: (v["quantity"], v["reservedQuantity"]) for s, v in stock.items()} == {
        "S": (8, 0),
        "M": (1, 0),
        "L": (8, 0),
    }
    assert flow.payment(ani_part["paymentId"], admin)["escrowStatus"] == "released"

    # --- Step 8: the factory ships the bundle, the warehouse receives it ----------------------
    [factory_view] = flow.purchase_orders(product["id"], factory_staff)
    assert factory_view["id"] == reorder["id"]
    shipped = ok(
        flow.api("warehouse").post(
            f"/api/purchase-orders/{reorder['id']}/ship",
            json={"trackingNumber": f"JNE-PO-{flow.suffix}"},
            headers=factory_staff,
        )
    )
    assert shipped["status"] == "shipped"
    ok(flow.api("warehouse").post(f"/api/purchase-orders/{reorder['id']}/receive", headers=admin))
    stock = flow.stock(product["id"], size)
    assert {s: v["availableQuantity"] for s, v in stock.items()} == {"S": 8, "M": 5, "L": 8}
    assert {s: v["surplusQuantity"] for s, v in stock.items()} == {"S": 4, "M": 0, "L": 4}

    _shipping_and_settlement(flow, factory, ani, ani_browser, ani_order, started)

    # --- Money and stock accounted for across every service (design 15) -----------------------
    quiet_audit(platform)  # once the outboxes have delivered what the flow left them
    code, verdicts, output = laku_audit(platform)
    assert code == 0, output
    assert set(verdicts.values()) == {"ok"}, output


def _shipping_and_settlement(
    flow: Flow,
    factory: dict[str, Any],
    ani: Account,
    ani_browser: PushBrowser,
    ani_order: dict[str, Any],
    started: datetime,
) -> None:
    """Steps 9 and 10, and what Ani was told along the way."""
    admin = flow.admin

    # --- Step 9: shipping with Biteship ---------------------------------------------------------
    # Step 8's "orders become ready for shipping": the goods were in hand at the close, so the
    # order is ready and the warehouse had logistics book it, with the cheapest configured
    # courier (Ani chose none), from the Bandung warehouse to Ani's default address.
    ready = ok(flow.api("order").get(f"/api/orders/{ani_order['id']}", headers=ani.headers))
    assert ready["readyToShipAt"] is not None and ready["courierChoice"] is None

    def booked() -> dict[str, Any] | None:
        page = ok(
            flow.api("logistics").get(
                "/api/shipments", params={"orderId": ani_order["id"]}, headers=ani.headers
            )
        )
        return page["items"][0] if page["items"] and page["items"][0]["price"] else None

    shipment = eventually(booked)
    # 9.1: the seed's body word for word: from the warehouse (40123) to Ani (12190).
    rates = ok(
        flow.api("logistics").post(
            "/api/rates",
            json={
                "orderId": ani_order["id"],
                "originPostalCode": "40123",
                "destinationPostalCode": "12190",
                "couriers": ["jne", "jnt", "sicepat"],
            },
            headers=ani.headers,
        )
    )
    assert {r["courierCompany"] for r in rates["rates"]} == {"jne", "jnt", "sicepat"}
    assert all(r["price"] > 0 for r in rates["rates"])
    cheapest = min(rates["rates"], key=lambda r: r["price"])
    assert (shipment["courierCompany"], shipment["courierType"], shipment["price"]) == (
        cheapest["courierCompany"],
        cheapest["courierType"],
        cheapest["price"],
    )
    assert (shipment["originPostalCode"], shipment["destinationPostalCode"]) == ("40123", "12190")
    # 9.2: asking again answers the order's shipment; nothing is booked twice.
    again = flow.api("logistics").post(
        "/api/shipments",
        json={
            "orderId": ani_order["id"],
            "courierCompany": shipment["courierCompany"],
            "courierType": shipment["courierType"],
        },
        headers=admin,
    )
    assert ok(again)["id"] == shipment["id"]
    tracking = shipment["trackingNumber"]
    assert tracking

    def order_status() -> str:
        return ok(flow.api("order").get(f"/api/orders/{ani_order['id']}", headers=ani.headers))[
            "status"
        ]

    def advance_until(status: str) -> None:
        for _ in range(10):
            moved = ok(
                flow.api("biteship-sandbox").post(
                    f"/sandbox/orders/{shipment['biteshipOrderId']}/advance"
                )
            )
            if moved["status"] == status:
                return
        raise AssertionError(f"never reached {status}")

    advance_until("picked")
    assert eventually(lambda: order_status() == "shipped")
    advance_until("delivered")
    assert eventually(lambda: order_status() == "delivered")
    # 9.3
    tracked = ok(flow.api("logistics").get(f"/api/shipments/track/{tracking}", headers=ani.headers))
    assert tracked["status"] == "delivered"
    assert [e["status"] for e in tracked["events"]][-2:] == ["dropping_off", "delivered"]

    # What Ani was told, in the app, by e-mail and on WhatsApp: joined, paid, the group
    # succeeded, the refund landed, ready to ship, shipped, delivered.
    def told() -> list[str]:
        return flow.inbox(ani)

    assert eventually(lambda: len(told()) == 7), told()
    inbox = " | ".join(told())
    session_path = f"/api/group-buying/{ani_order['groupSessionId']}"
    session_code = ok(flow.api("group-buying").get(session_path))["sessionCode"]
    for said in (session_code, "Rp 150.000", tracking, "delivered"):
        assert said in inbox, inbox
    assert eventually(lambda: len(flow.emails_to(ani.email)) == 7)
    assert eventually(lambda: len(flow.whatsapp_to("+6281211110001")) == 7)
    # And pushed to her browser, which alone can read them (encrypted for its keys).
    pushed = eventually(
        lambda: p if len(p := pushes_received(flow.platform, ani_browser)) == 7 else None
    )
    assert pushed, "not every notice was pushed"
    assert sorted(ani_browser.decrypt(p)["body"] for p in pushed) == sorted(told())

    # --- Step 10: settlement -------------------------------------------------------------------
    ok(
        flow.api("settlement").put(
            f"/api/settlements/payout-accounts/{factory['id']}",
            json={"bankCode": "BCA", "accountNumber": "1234567890", "accountHolderName": "Asep"},
            headers=admin,
        )
    )
    period_end = datetime.now(UTC)
    period = {
        "factoryId": factory["id"],
        "periodStart": started.isoformat(),
        "periodEnd": period_end.isoformat(),
    }
    preview = ok(
        flow.api("settlement").get("/api/settlements/preview", params=period, headers=admin)
    )
    # Escrow released: 7 Medium shirts at the final 65,000 (475,000 + 170,000 paid, less the
    # 150,000 + 40,000 tier refunds); the platform keeps 5%, half up.
    assert (preview["totalAmount"], preview["platformFee"], preview["netAmount"]) == (
        455000,
        22750,
        432250,
    )
    settlement = ok(
        flow.api("settlement").post(
            "/api/settlements",
            json={**period, "totalAmount": 455000, "platformFee": 22750, "netAmount": 432250},
            headers=admin,
        ),
        201,
    )
    assert settlement["status"] == "pending"
    [entry] = settlement["ledgerEntries"]
    assert sum(line["debit"] for line in entry["lines"]) == sum(
        line["credit"] for line in entry["lines"]
    )
    payout = eventually(
        lambda: ok(
            flow.api("settlement").get(f"/api/settlements/{settlement['id']}", headers=admin)
        )["payoutId"]
    )
    ok(flow.api("xendit-sandbox").post(f"/sandbox/payouts/{payout}/succeed"))
    paid = eventually(
        lambda: (
            s
            if (
                s := ok(
                    flow.api("settlement").get(
                        f"/api/settlements/{settlement['id']}", headers=admin
                    )
                )
            )["status"]
            == "paid"
            else None
        ),
        timeout=30,
    )
    assert paid, "the payout was never followed to SUCCEEDED"
    assert len(paid["ledgerEntries"]) == 2
    balances = ok(flow.api("settlement").get("/api/ledger/balances", headers=admin))
    assert balances["totalDebit"] == balances["totalCredit"]
