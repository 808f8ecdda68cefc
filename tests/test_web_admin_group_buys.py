"""A group buy's end through the admin's pages in Chromium: one cancelled, one closed by
"close the expired now" short of its MOQ, each as its buyer then sees it; a stock adjustment
and archiving a product; the factory's portal showing its group buys."""

import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Locator, Page, expect

from laku.web.formatting import rupiah
from tests.catalog import create_seed_catalog, created
from tests.support import ADMIN_EMAIL, ADMIN_PASSWORD, Platform, bearer
from tests.test_close import _join
from tests.web import (
    chromium,
    end_now,
    eventually,
    login,
    new_context,
    open_session,
    publish,
    reload_until,
    screenshot,
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as running:
        yield running


def _held(platform: Platform, service: str, path: str, **params: Any) -> Any:
    response = platform.client(service).get(
        path, params=params, headers=bearer(platform.admin_token)
    )
    assert response.status_code == 200, response.text
    return response.json()


def _participation(page: Page, session: dict[str, Any]) -> Locator:
    """The buyer's card for their part in `session`, on their group buys."""
    return page.locator(
        ".participation", has=page.locator(f'a[href="/g/{session["sessionCode"]}"]')
    )


def _session_status(platform: Platform, session_id: str) -> str:
    return _held(platform, "group-buying", f"/api/group-buying/{session_id}")["status"]


def test_the_admin_cancels_one_group_buy_and_closes_another_short_of_its_moq(
    platform: Platform, browser: Browser
) -> None:
    catalog = create_seed_catalog(platform)
    publish(platform, catalog.product_id)
    cancelled = open_session(platform, catalog, target_moq=10)
    expiring = open_session(platform, catalog, target_moq=10)

    # The buyer: one join left unpaid, one paid.
    buyer = platform.new_buyer("Rina")
    _join(platform, cancelled, catalog.variants["M"], 1, pay=False, buyer=buyer)
    _join(platform, expiring, catalog.variants["L"], 2, pay=True, buyer=buyer)
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
    # The list is of open group buys (as group-buying lists them): the cancelled one leaves it.
    expect(admin.locator(f'tr[data-session="{cancelled["sessionCode"]}"]')).to_have_count(0)
    assert _session_status(platform, cancelled["id"]) == "cancelled"

    # Short of its MOQ at its end: closed from the page, failed, the buyer's money back.
    end_now(platform, expiring["id"])
    admin.get_by_role("button", name="Tutup yang sudah berakhir sekarang").click()
    expect(admin.get_by_role("status")).to_have_text("Tersimpan.")
    assert eventually(lambda: _session_status(platform, expiring["id"]) == "failed", timeout=30)
    admin.reload()
    expect(admin.locator(f'tr[data-session="{expiring["sessionCode"]}"]')).to_have_count(0)
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
    expect(page.get_by_role("alert")).to_have_text("Stok tidak boleh negatif.")
    form = page.locator('form[action$="/adjustments"]')
    expect(form.get_by_label("Varian")).to_have_value(catalog.variants["M"])
    expect(form.get_by_label("Perubahan (+/-)")).to_have_value("-100")
    expect(form.get_by_label("Alasan")).to_have_value("Rusak saat penyimpanan")

    form.get_by_label("Perubahan (+/-)").fill("-3")
    form.get_by_role("button").click()
    expect(page.get_by_role("status")).to_have_text("Tersimpan.")
    expect(page.locator('tr[data-variant="Medium"]')).to_contain_text("5/8")
    [stock] = _held(platform, "warehouse", "/api/inventory", productId=catalog.product_id)
    medium = next(v for v in stock["variants"] if v["variantId"] == catalog.variants["M"])
    assert medium["availableQuantity"] == 5

    page.get_by_role("button", name="Arsipkan").click()
    expect(page.locator("#product-status")).to_have_text("Diarsipkan")
    assert _held(platform, "product", f"/api/products/{catalog.product_id}")["status"] == "archived"
    screenshot(page, "admin-product-archived-desktop")
