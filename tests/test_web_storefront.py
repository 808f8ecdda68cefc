"""The storefront in Chromium: a buyer's whole journey through the pages, from registering to
the parcel delivered, and the same join and payment with JavaScript turned off."""

import re
import time

import pytest
from playwright.sync_api import Browser, Page, expect

from laku.testing.catalog import create_seed_catalog
from laku.testing.platform import Platform, bearer
from tests.group_buys import end_now
from tests.support import eventually
from tests.web import (
    home_showing,
    new_context,
    one_browser,
    open_session,
    publish,
    register,
    reload_until,
    screenshot,
)

browser = pytest.fixture(scope="module", name="browser")(one_browser)


def _join_and_pay(page: Page, code: str, variant: str, quantity: int) -> None:
    page.goto(f"/g/{code}")
    page.get_by_label(re.compile(f"^{variant}")).check()
    page.get_by_label("Jumlah").fill(str(quantity))
    page.get_by_role("button", name="Cek harga").click()
    page.get_by_role("button", name="Gabung dan bayar").click()
    # The Xendit sandbox's checkout page: pay as the buyer would, and be sent back.
    page.wait_for_url(re.compile(r"/checkout/"))
    page.get_by_role("button", name="Pay").click()
    page.wait_for_url(re.compile(r"/me/group-buys$"))


def test_a_buyer_registers_joins_pays_and_follows_the_parcel(
    platform: Platform, browser: Browser
) -> None:
    catalog = create_seed_catalog(platform)
    publish(platform, catalog.product_id)
    session = open_session(platform, catalog, target_moq=4)
    code = session["sessionCode"]
    context = new_context(browser, platform)
    page = context.new_page()

    register(page, "Ani Lestari")
    page.goto("/me/addresses")
    page.get_by_label("Label (mis. Rumah)").fill("Rumah")
    page.get_by_label("Nama penerima").fill("Ani Lestari")
    page.get_by_label("Nomor HP penerima").fill("+6281234567890")
    page.get_by_label("Alamat lengkap").fill("Jl. Melati No. 1")
    page.get_by_label("Kota/Kabupaten").fill("Jakarta Selatan")
    page.get_by_label("Provinsi").fill("DKI Jakarta")
    page.get_by_label("Kode pos").fill("12190")
    page.get_by_label("Jadikan utama").check()
    page.get_by_role("button", name="Simpan").click()
    expect(page.locator(".address h2")).to_contain_text("Rumah")

    # Home: the open group buy with its price, tier, progress and time left.
    home_showing(page, code)
    card = page.locator(".card", has=page.locator(f'a[href="/g/{code}"]'))
    expect(card).to_contain_text("Premium T-Shirt")
    expect(card).to_contain_text("Rp 95.000")
    expect(card).to_contain_text("Rp 150.000")  # the product's base price, struck through
    expect(card).to_contain_text("0/4")
    screenshot(page, "home-phone")

    # The group-buy page: the ladder, the next tier, each variant's stock, the share link.
    page.goto(f"/g/{code}")
    expect(page.locator("tr.current")).to_contain_text("25%")
    expect(page.get_by_text("Pada tingkat berikutnya harga menjadi Rp 85.000")).to_be_visible()
    expect(page.locator("[data-variant] label", has_text="Medium")).to_contain_text("8 tersedia")
    share = page.get_by_role("link", name="Bagikan lewat WhatsApp").get_attribute("href")
    assert share and share.startswith("https://wa.me/?text=") and code in share
    assert "Rp 95.000" in page.locator('meta[property="og:title"]').get_attribute("content")
    screenshot(page, "group-buy-phone")

    # Choose Medium x4: the server's price (the tier's 95,000 for every variant) first.
    page.get_by_label(re.compile("^Medium")).check()
    page.get_by_label("Jumlah").fill("4")
    page.get_by_role("button", name="Cek harga").click()
    expect(page.locator("#total")).to_have_text("Rp 380.000")
    screenshot(page, "confirm-phone")
    page.get_by_role("button", name="Gabung dan bayar").click()
    page.wait_for_url(re.compile(r"/checkout/"))
    expect(page.locator(".amount")).to_have_text("Rp 380.000")
    page.get_by_role("button", name="Pay").click()
    # Paid, the checkout sends the buyer back to their group buys, where the payment shows.
    page.wait_for_url(re.compile(r"/me/group-buys$"))
    assert reload_until(page, "Dibayar"), page.locator("main").inner_text()
    screenshot(page, "my-group-buys-phone")

    # The close: the group reached its MOQ at the 100% tier (65,000): 30,000 back
    # per shirt, 120,000 in the wallet, and an order.
    end_now(platform, session["id"])
    closed = platform.client("group-buying").post(
        "/api/group-buying/process-expired", headers=bearer(platform.admin_token)
    )
    assert closed.status_code == 200, closed.text
    assert reload_until(page, "Berhasil"), page.locator("main").inner_text()
    participation = page.locator(".participation").first
    expect(participation.locator(".final-price")).to_have_text("Rp 65.000")
    expect(participation.locator(".refund")).to_have_text("Rp 120.000")
    page.goto("/me/wallet")
    expect(page.locator("#balance")).to_have_text("Rp 120.000")
    expect(page.locator(".tx-tier_refund")).to_contain_text("Rp 120.000")
    screenshot(page, "wallet-phone")
    page.goto("/me/orders")
    assert reload_until(page, "ORD-"), page.locator("main").inner_text()
    page.get_by_role("link", name=re.compile("^ORD-")).first.click()
    order_id = page.url.rsplit("/", 1)[-1]

    # The goods were in hand at the close, so the warehouse had the parcel booked (to the
    # buyer's address, the cheapest courier); it moves in the Biteship sandbox until delivered.
    def booked() -> list[dict]:
        page_of = platform.client("logistics").get(
            "/api/shipments", params={"orderId": order_id}, headers=bearer(platform.admin_token)
        )
        return page_of.json()["items"]

    deadline = time.monotonic() + 30
    while not booked():
        assert time.monotonic() < deadline, "the parcel was never booked"
        time.sleep(0.2)
    [shipment] = booked()
    biteship = platform.client("biteship-sandbox")
    for _ in range(10):
        moved = biteship.post(f"/sandbox/orders/{shipment['biteshipOrderId']}/advance")
        if moved.json()["status"] == "delivered":
            break
    assert reload_until(page, "Terkirim"), page.locator("main").inner_text()
    expect(page.locator('.timeline li[data-status="delivered"]')).to_be_visible()
    expect(page.locator('.timeline li[data-status="picked"]')).to_be_visible()
    screenshot(page, "order-tracking-phone")

    page.goto("/me/notifications")
    expect(page.locator("main .card").first).to_be_visible()
    context.close()


def test_browsing_joining_and_paying_work_without_javascript(
    platform: Platform, browser: Browser
) -> None:
    catalog = create_seed_catalog(platform)
    publish(platform, catalog.product_id)
    session = open_session(platform, catalog, target_moq=10)
    context = new_context(browser, platform, javascript=False)
    page = context.new_page()
    register(page, "Budi")
    home_showing(page, session["sessionCode"])
    page.locator(f'a[href="/g/{session["sessionCode"]}"]').first.click()
    expect(page.locator("h1")).to_have_text("Premium T-Shirt")
    _join_and_pay(page, session["sessionCode"], "Large", 2)
    assert reload_until(page, "Dibayar"), page.locator("main").inner_text()
    context.close()


def test_progress_and_stock_update_while_the_page_is_open(
    platform: Platform, browser: Browser
) -> None:
    catalog = create_seed_catalog(platform, stock={"S": 2, "M": 8, "L": 8})
    publish(platform, catalog.product_id)
    session = open_session(platform, catalog, target_moq=10)
    watcher = new_context(browser, platform, phone=False).new_page()
    watcher.goto("/")
    screenshot(watcher, "home-desktop")
    watcher.goto(f"/g/{session['sessionCode']}")
    small = watcher.locator(f'[data-variant="{catalog.variants["S"]}"]')
    expect(small).to_contain_text("2 tersedia")
    screenshot(watcher, "group-buy-desktop")

    other = new_context(browser, platform).new_page()
    register(other, "Citra")
    _join_and_pay(other, session["sessionCode"], "Small", 2)
    # No reload: the open page sees Small sold out and the paid units within seconds.
    expect(small).to_contain_text("habis", timeout=15_000)
    expect(small.locator("input")).to_be_disabled()
    expect(watcher.locator("[data-field=paidQuantity]")).to_have_text("2", timeout=15_000)
    expect(watcher.locator("[data-field=buyerCount]")).to_have_text("1")
    assert eventually(lambda: watcher.locator("#progress").get_attribute("value") == "20")
