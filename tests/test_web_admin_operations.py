"""The admin's console at work in Chromium, each step checked against what the services then
hold: a factory settled (preview, payout account, create) with the ledger's balances, then its
group buy's orders, one shipped and one cancelled with its subtotal back in the buyer's wallet
and owed back by the factory; a group buy cancelled and another closed short of its MOQ, as
their buyer then sees them, and the factory's portal; a stock adjustment and an archive."""

import re
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from playwright.sync_api import Browser, Locator, Page, expect

from laku.testing.catalog import create_seed_catalog, created
from laku.testing.platform import ADMIN_EMAIL, ADMIN_PASSWORD, Account, Platform, bearer
from laku.web.formatting import WIB, rupiah
from tests.group_buys import close_group_buy, end_now, join_group_buy
from tests.support import eventually
from tests.web import (
    fill,
    login,
    new_context,
    one_browser,
    open_session,
    publish,
    refused_keeping_input,
    reload_until,
    screenshot,
)

browser = pytest.fixture(scope="module", name="browser")(one_browser)


def _a_past_second(after: datetime | None = None) -> datetime:
    """Now, to the second, never on the minute (Chromium shows `10:15:00` as `10:15`), and
    later than `after`: a period ends after it starts, however fast what came between."""
    while (moment := datetime.now(UTC).replace(microsecond=0)).second == 0 or (
        after is not None and moment <= after
    ):
        time.sleep(0.2)
    return moment


def _ready_to_ship(orders: dict[str, dict[str, Any]]) -> bool:
    return len(orders) == 2 and all(o["readyToShipAt"] for o in orders.values())


def _wib_seconds(moment: datetime) -> str:
    """As an `<input type=datetime-local step=1>` takes it: Jakarta time to the second."""
    return moment.astimezone(WIB).strftime("%Y-%m-%dT%H:%M:%S")


def _get(platform: Platform, service: str, path: str, **params: Any) -> Any:
    response = platform.client(service).get(
        path, params=params, headers=bearer(platform.admin_token)
    )
    assert response.status_code == 200, response.text
    return response.json()


def _orders_of(platform: Platform, session_id: str) -> dict[str, dict[str, Any]]:
    """The group buy's orders by their buyer, once each is ready to ship."""
    orders = _get(platform, "order", "/api/orders", limit=100)["items"]
    return {o["userId"]: o for o in orders if o["groupSessionId"] == session_id}


def _preview(page: Page, factory_id: str, start: datetime, end: datetime) -> None:
    form = page.locator('form[method="get"]')
    form.get_by_label("Pabrik").select_option(value=factory_id)
    form.get_by_label("Awal periode (WIB)").fill(_wib_seconds(start))
    form.get_by_label("Akhir periode (WIB)").fill(_wib_seconds(end))
    form.get_by_role("button", name="Pratinjau").click()


def test_the_admin_settles_a_factory_and_ships_and_cancels_its_orders(
    platform: Platform, browser: Browser
) -> None:
    # A group buy of MOQ 2 closes at its last tier: two buyers of one Small shirt at 65,000
    # each, 130,000 released to the factory. Neither buyer has an address yet.
    start = _a_past_second()
    catalog = create_seed_catalog(platform, reorder_threshold=0)
    publish(platform, catalog.product_id)
    session = open_session(platform, catalog, target_moq=2)
    shipped_buyer, cancelled_buyer = (
        join_group_buy(platform, session, catalog.variants["S"], 1, pay=True).buyer
        for _ in range(2)
    )
    end_now(platform, session["id"])
    assert close_group_buy(platform, session["id"])["status"] == "success"
    assert eventually(lambda: _ready_to_ship(_orders_of(platform, session["id"]))), _orders_of(
        platform, session["id"]
    )
    orders = _orders_of(platform, session["id"])

    def released(end: datetime) -> dict[str, Any]:
        return _get(
            platform,
            "settlement",
            "/api/settlements/preview",
            factoryId=catalog.factory_id,
            periodStart=start.isoformat(),
            periodEnd=end.isoformat(),
        )

    # Payment releases the escrow through its outbox, maybe after the orders are ready; the
    # period then ends on a whole second after the release.
    assert eventually(lambda: released(_a_past_second(after=start))["totalAmount"] == 130_000)
    end = _a_past_second(after=start)
    expected = released(end)
    assert expected["totalAmount"] == 130_000

    page = new_context(browser, platform, phone=False).new_page()
    login(page, ADMIN_EMAIL, ADMIN_PASSWORD)
    page.wait_for_url("**/admin")

    # Preview: the released escrow, the platform's fee and the factory's net, as the server has
    # them. Created without a payout account, it is refused, and the period stays as typed.
    page.goto("/admin/settlements")
    _preview(page, catalog.factory_id, start, end)
    preview = page.locator("#preview")
    expect(preview.locator("[data-field=totalAmount]")).to_have_text("Rp 130.000")
    expect(preview.locator("[data-field=platformFee]")).to_have_text(
        rupiah(expected["platformFee"])
    )
    expect(preview.locator("[data-field=netAmount]")).to_have_text(rupiah(expected["netAmount"]))
    screenshot(page, "admin-settlement-preview-desktop")
    page.get_by_role("button", name="Buat penyelesaian").click()
    expect(page.get_by_role("alert")).to_have_text("Atur rekening pencairan pabrik ini dulu.")
    expect(page.get_by_label("Akhir periode (WIB)")).to_have_value(_wib_seconds(end))

    # The payout account: a malformed account number is refused with the field named and
    # everything typed kept; then saved.
    account = 'form[action="/admin/settlements/payout-account"]'
    typed = {
        "Pabrik": catalog.factory_id,
        "Bank": "MANDIRI",
        "Nomor rekening": "12-34",
        "Nama pemilik rekening": "PT Konveksi Maju",
    }
    fill(page.locator(account), typed)
    page.locator(account).get_by_role("button", name="Simpan").click()
    message = "Periksa kembali isian Anda: Nomor rekening."
    account_form = refused_keeping_input(page, account, message, typed)
    account_form.get_by_label("Nomor rekening").fill("1230004567")
    account_form.get_by_role("button", name="Simpan").click()
    expect(page.get_by_role("status")).to_have_text("Tersimpan.")
    payout_account = _get(
        platform, "settlement", f"/api/settlements/payout-accounts/{catalog.factory_id}"
    )
    assert (payout_account["bankCode"], payout_account["accountNumber"]) == (
        "MANDIRI",
        "1230004567",
    )

    # Created: listed with its net, and the ledger owes the factory that net.
    _preview(page, catalog.factory_id, start, end)
    page.get_by_role("button", name="Buat penyelesaian").click()
    expect(page.get_by_role("status")).to_have_text("Tersimpan.")
    [settlement] = _get(platform, "settlement", "/api/settlements", factoryId=catalog.factory_id)[
        "items"
    ]
    assert settlement["netAmount"] == expected["netAmount"]
    factory_name = page.locator(
        f'#f-acct-factory option[value="{catalog.factory_id}"]'
    ).inner_text()
    row = page.locator(f'#settlements tr[data-factory="{factory_name}"]')
    expect(row).to_contain_text(rupiah(expected["netAmount"]))
    expect(row).to_contain_text("MANDIRI 1230004567")
    expect(row.locator(".settlement-status")).to_have_text(
        re.compile("^(Pencairan diproses|Dibayar)$")
    )
    payable = page.locator(f'#ledger tr[data-account="factory_payable:{catalog.factory_id}"]')
    expect(payable.locator("th")).to_have_text(f"Utang ke pabrik · {factory_name}")
    ledger = _get(platform, "settlement", "/api/ledger/balances")
    [account] = [
        a for a in ledger["accounts"] if a["account"] == f"factory_payable:{catalog.factory_id}"
    ]
    expect(payable).to_contain_text(rupiah(account["credit"]))
    totals = page.locator("#ledger tfoot td")
    expect(totals.nth(0)).to_have_text(totals.nth(1).inner_text())  # debits = credits
    screenshot(page, "admin-settlements-desktop")

    # Orders: the one without an address cannot be shipped (the courier stays as chosen); the
    # other's buyer adds one, and it is booked.
    shipped_order = orders[shipped_buyer.id]
    cancelled_order = orders[cancelled_buyer.id]
    page.goto("/admin/orders")
    no_address = page.locator(f'tr[data-order="{cancelled_order["orderNumber"]}"]')
    no_address.get_by_label("Kurir").select_option(label="J&T EZ")
    no_address.get_by_role("button", name=re.compile("^Pesan pengiriman")).click()
    expect(page.get_by_role("alert")).to_have_text("Tambahkan alamat pengiriman dulu.")
    expect(
        page.locator(f'tr[data-order="{cancelled_order["orderNumber"]}"]').get_by_label("Kurir")
    ).to_have_value("jnt|ez")
    _add_address(platform, shipped_buyer)
    row = page.locator(f'tr[data-order="{shipped_order["orderNumber"]}"]')
    row.get_by_label("Kurir").select_option(label="SiCepat REG")
    row.get_by_role("button", name=re.compile("^Pesan pengiriman")).click()
    expect(page.get_by_role("status")).to_have_text("Tersimpan.")
    [shipment] = _get(platform, "logistics", "/api/shipments", orderId=shipped_order["id"])["items"]
    assert (shipment["courierCompany"], shipment["courierType"]) == ("sicepat", "reg")
    row = page.locator(f'tr[data-order="{shipped_order["orderNumber"]}"]')
    expect(row.locator(".shipment")).to_contain_text("SICEPAT REG")
    if shipment["trackingNumber"]:
        expect(row.locator(".shipment")).to_contain_text(shipment["trackingNumber"])
    expect(row.get_by_role("button")).to_have_count(0)  # booked: neither booked nor cancelled again

    # The other is cancelled with a reason: refunded to its buyer's wallet, and the factory,
    # settled for it already, owes it back.
    row = page.locator(f'tr[data-order="{cancelled_order["orderNumber"]}"]')
    row.get_by_label("Alasan").fill("Pembeli tidak dapat dihubungi")
    row.get_by_role("button", name=re.compile("^Batalkan pesanan")).click()
    expect(page.get_by_role("status")).to_have_text("Tersimpan.")
    row = page.locator(f'tr[data-order="{cancelled_order["orderNumber"]}"]')
    expect(row).to_contain_text("Pembeli tidak dapat dihubungi")
    expect(row.locator(".order-status")).to_have_text(re.compile("^(Dibatalkan|Dikembalikan)$"))
    held = _get(platform, "order", f"/api/orders/{cancelled_order['id']}")
    assert held["status"] in ("cancelled", "refunded")
    assert held["cancelReason"] == "Pembeli tidak dapat dihubungi"
    assert eventually(
        lambda: any(
            tx["reason"] == "order_cancelled_refund" and tx["amount"] == held["subtotal"]
            for tx in platform.client("wallet")
            .get("/api/wallets/me/transactions", headers=cancelled_buyer.headers)
            .json()["items"]
        ),
        timeout=30,
    )
    screenshot(page, "admin-orders-desktop")
    page.goto("/admin/settlements")
    assert reload_until(page, "Piutang dari pabrik", timeout=30)
    receivable = page.locator(f'#ledger tr[data-account="factory_receivable:{catalog.factory_id}"]')
    expect(receivable.locator("[data-field=balance]")).to_have_text(rupiah(held["subtotal"]))


def _add_address(platform: Platform, buyer: Account) -> None:
    response = platform.client("address").post(
        "/api/addresses",
        json={
            "label": "Rumah",
            "recipientName": "Sari",
            "phone": "+6281234500001",
            "street": "Jl. Kenanga No. 3",
            "city": "Jakarta Selatan",
            "province": "DKI Jakarta",
            "postalCode": "12190",
            "isDefault": True,
        },
        headers={**buyer.headers, "Idempotency-Key": uuid.uuid4().hex},
    )
    assert response.status_code == 201, response.text


def _participation(page: Page, session: dict[str, Any]) -> Locator:
    """The buyer's card for their part in `session`, on their group buys."""
    return page.locator(
        ".participation", has=page.locator(f'a[href="/g/{session["sessionCode"]}"]')
    )


def _session_status(platform: Platform, session_id: str) -> str:
    return _get(platform, "group-buying", f"/api/group-buying/{session_id}")["status"]


def test_the_admin_cancels_one_group_buy_and_closes_another_short_of_its_moq(
    platform: Platform, browser: Browser
) -> None:
    catalog = create_seed_catalog(platform)
    publish(platform, catalog.product_id)
    cancelled, expiring = (open_session(platform, catalog, target_moq=10) for _ in range(2))

    # The buyer: one join left unpaid, one paid.
    buyer = platform.new_buyer("Rina")
    join_group_buy(platform, cancelled, catalog.variants["M"], 1, pay=False, buyer=buyer)
    join_group_buy(platform, expiring, catalog.variants["L"], 2, pay=True, buyer=buyer)
    mine = new_context(browser, platform).new_page()
    login(mine, buyer.email, "buyer-password")
    mine.goto("/me/group-buys")
    pending = _participation(mine, cancelled)
    expect(pending.locator(".badge")).to_have_text("Menunggu pembayaran")
    pay = pending.get_by_role("link", name=re.compile("^Bayar Rp "))
    assert "/checkout/" in (pay.get_attribute("href") or "")

    # The factory's portal lists its products' open group buys.
    staff_email = f"staff-{uuid.uuid4().hex[:8]}@laku.id"
    created(
        platform.client("factory").post(
            f"/api/factories/{catalog.factory_id}/users",
            json={"email": staff_email, "password": "factory-password", "name": "Asep"},
            headers=bearer(platform.admin_token),
        )
    )
    portal = new_context(browser, platform).new_page()
    login(portal, staff_email, "factory-password")
    portal.wait_for_url("**/factory")
    ours = portal.locator('section[aria-labelledby="gb-h"]')
    for session in (cancelled, expiring):
        expect(ours.locator(f'a[href="/g/{session["sessionCode"]}"]')).to_have_count(1)
    expect(ours).to_contain_text("Aktif")  # the one with a paid join

    admin = new_context(browser, platform, phone=False).new_page()
    login(admin, ADMIN_EMAIL, ADMIN_PASSWORD)
    admin.goto("/admin/group-buys")
    row = admin.locator(f'tr[data-session="{cancelled["sessionCode"]}"]')
    row.get_by_role("button", name=f"Batalkan {cancelled['sessionCode']}").click()
    expect(admin.get_by_role("status")).to_have_text("Tersimpan.")
    # Listed on as cancelled, with nothing left to cancel.
    row = admin.locator(f'tr[data-session="{cancelled["sessionCode"]}"]')
    expect(row.locator(".badge")).to_have_text("Dibatalkan")
    expect(row.get_by_role("button")).to_have_count(0)
    assert _session_status(platform, cancelled["id"]) == "cancelled"

    # Short of its MOQ at its end: closed from the page, failed, the buyer's money back.
    end_now(platform, expiring["id"])
    admin.get_by_role("button", name="Tutup yang sudah berakhir sekarang").click()
    expect(admin.get_by_role("status")).to_have_text("Tersimpan.")
    assert eventually(lambda: _session_status(platform, expiring["id"]) == "failed", timeout=30)
    admin.reload()
    row = admin.locator(f'tr[data-session="{expiring["sessionCode"]}"]')
    expect(row.locator(".badge")).to_have_text("Gagal")
    expect(row.get_by_role("button")).to_have_count(0)
    screenshot(admin, "admin-group-buys-closed-desktop")

    mine.goto("/me/group-buys")
    assert reload_until(mine, "Gagal, dana dikembalikan", timeout=30)
    failed = _participation(mine, expiring)
    expect(failed.locator(".badge")).to_have_text("Gagal, dana dikembalikan")
    refund = failed.locator(".refund")
    expect(refund).to_have_text(re.compile(r"^Rp \d"))
    wallet = platform.client("wallet").get("/api/wallets/me", headers=buyer.headers).json()
    assert refund.inner_text() == rupiah(wallet["balance"])
    pending = _participation(mine, cancelled)
    expect(pending.locator(".badge")).to_have_text("Dibatalkan")
    expect(pending.get_by_role("link", name=re.compile("^Bayar"))).to_have_count(0)
    screenshot(mine, "my-group-buys-ended-phone")


def test_the_admin_adjusts_stock_and_archives_a_product(
    platform: Platform, browser: Browser
) -> None:
    catalog = create_seed_catalog(platform)
    page = new_context(browser, platform, phone=False).new_page()
    login(page, ADMIN_EMAIL, ADMIN_PASSWORD)
    page.goto(f"/admin/products/{catalog.product_id}")
    form = page.locator('form[action$="/adjustments"]')

    # More taken out than there is: refused, what was typed kept.
    form.get_by_label("Varian").select_option(label="Medium")
    form.get_by_label("Perubahan (+/-)").fill("-100")
    form.get_by_label("Alasan").fill("Rusak saat penyimpanan")
    form.get_by_role("button").click()
    form = refused_keeping_input(
        page,
        'form[action$="/adjustments"]',
        "Stok tidak boleh negatif.",
        {
            "Varian": catalog.variants["M"],
            "Perubahan (+/-)": "-100",
            "Alasan": "Rusak saat penyimpanan",
        },
    )

    form.get_by_label("Perubahan (+/-)").fill("-3")
    form.get_by_role("button").click()
    expect(page.get_by_role("status")).to_have_text("Tersimpan.")
    expect(page.locator('tr[data-variant="Medium"]')).to_contain_text("5/8")
    [stock] = _get(platform, "warehouse", "/api/inventory", productId=catalog.product_id)
    medium = next(v for v in stock["variants"] if v["variantId"] == catalog.variants["M"])
    assert medium["availableQuantity"] == 5

    page.get_by_role("button", name="Arsipkan").click()
    expect(page.locator("#product-status")).to_have_text("Diarsipkan")
    assert _get(platform, "product", f"/api/products/{catalog.product_id}")["status"] == "archived"
    screenshot(page, "admin-product-archived-desktop")
