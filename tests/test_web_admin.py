"""The admin console and the factory portal in Chromium: the admin builds the seed's catalog
and opens a group buy through the pages; the factory ships its purchase order with a tracking
number and the admin receives it; another factory cannot see it."""

import json
import re
import uuid
from datetime import datetime, timedelta

import pytest
from PIL import Image
from playwright.sync_api import Browser, Page, expect

from laku.testing.catalog import SEED_VARIANTS, created
from laku.testing.platform import ADMIN_EMAIL, ADMIN_PASSWORD, Platform, bearer
from laku.web.formatting import WIB
from tests.support import eventually
from tests.web import home_showing, login, new_context, one_browser, screenshot

browser = pytest.fixture(scope="module", name="browser")(one_browser)


def _create_factory(page: Page, name: str, phone: str) -> None:
    page.goto("/admin/factories")
    form = page.locator("form", has=page.get_by_label("Nama pemilik"))
    form.get_by_label("Nama", exact=True).fill(name)
    form.get_by_label("Nama pemilik").fill("Budi Santoso")
    form.get_by_label("Nomor WhatsApp").fill(phone)
    form.get_by_label("Alamat lengkap").fill("Jl. Industri No. 5, Bandung")
    form.get_by_label("Kode pos").fill("40123")
    form.get_by_role("button", name="Buat").click()
    expect(page.get_by_role("status")).to_have_text("Tersimpan.")


def _factory_staff(platform: Platform, factory_name: str) -> tuple[str, str]:
    admin = bearer(platform.admin_token)
    factories = platform.client("factory").get(
        "/api/factories", params={"q": factory_name}, headers=admin
    )
    factory_id = factories.json()["items"][0]["id"]
    email = f"staff-{uuid.uuid4().hex[:8]}@laku.id"
    created(
        platform.client("factory").post(
            f"/api/factories/{factory_id}/users",
            json={"email": email, "password": "factory-password", "name": "Asep"},
            headers=admin,
        )
    )
    return factory_id, email


def test_the_admin_builds_the_catalog_and_the_factory_ships_its_purchase_order(
    platform: Platform, browser: Browser, tmp_path_factory: pytest.TempPathFactory
) -> None:
    suffix = uuid.uuid4().hex[:6].upper()
    page = new_context(browser, platform, phone=False).new_page()
    login(page, ADMIN_EMAIL, ADMIN_PASSWORD)
    page.wait_for_url("**/admin")
    expect(page.locator("h1")).to_have_text("Dasbor")

    # Factories: one created and verified, another rejected with a reason.
    factory_name = f"Konveksi Bandung {suffix}"
    _create_factory(page, factory_name, f"+62812{int(suffix, 16) % 10**7:07d}")
    row = page.locator(f'tr[data-factory="{factory_name}"]')
    row.get_by_role("button", name="Verifikasi").click()
    expect(row).to_contain_text("Terverifikasi")
    other_name = f"Konveksi Lain {suffix}"
    _create_factory(page, other_name, f"+62813{int(suffix, 16) % 10**7:07d}")
    other = page.locator(f'tr[data-factory="{other_name}"]')
    other.get_by_label("Alasan").fill("Dokumen NIB tidak lengkap")
    other.get_by_role("button", name="Tolak").click()
    expect(page.locator(f'tr[data-factory="{other_name}"]')).to_contain_text(
        "Dokumen NIB tidak lengkap"
    )
    screenshot(page, "admin-factories-desktop")

    # A category, then the product with the seed's variants, bundle and stock.
    page.goto("/admin/categories")
    page.get_by_label("Nama", exact=True).fill(f"Pakaian {suffix}")
    page.get_by_role("button", name="Buat").click()
    expect(page.locator("main ul")).to_contain_text(f"Pakaian {suffix}")

    page.goto("/admin/products")
    page.get_by_label("Pabrik").select_option(label=factory_name)
    page.get_by_label("Kategori").select_option(label=f"Pakaian {suffix}")
    page.get_by_label("SKU").fill(f"TSHIRT-{suffix}")
    page.get_by_label("Nama", exact=True).fill("Premium T-Shirt")
    page.get_by_label("Harga awal (Rp)").fill("150000")
    page.get_by_label("Harga pokok (Rp)").fill("80000")
    page.get_by_label("MOQ").fill("100")
    page.get_by_label("Durasi grup (jam)").fill("168")
    page.get_by_role("button", name="Buat").click()
    page.wait_for_url(re.compile(r"/admin/products/[0-9a-f-]{36}"))
    for variant in SEED_VARIANTS:
        form = page.locator("form", has=page.get_by_role("button", name="Tambah varian"))
        form.get_by_label("SKU").fill(f"{variant['sku']}-{suffix}")
        form.get_by_label("Varian").fill(variant["variantName"])
        form.get_by_label("Selisih harga (Rp)").fill(str(variant["priceAdjustment"]))
        form.get_by_role("button", name="Tambah varian").click()
        expect(page.locator(f'tr[data-variant="{variant["variantName"]}"]')).to_be_visible()
    for name in ("Small", "Medium", "Large"):
        page.get_by_label(f"{name} · unit per bundel").fill("4")
    page.locator("form", has_text="unit per bundel").get_by_role("button").click()
    expect(page.locator('tr[data-variant="Medium"]')).to_contain_text("4")
    stock_form = page.locator('form[action$="/inventory"]')
    for name in ("Small", "Medium", "Large"):
        group = stock_form.locator("fieldset", has_text=name)
        group.get_by_label("Stok", exact=True).fill("8")
        group.get_by_label("Stok maksimum").fill("8")
        group.get_by_label("Pesan ulang pada").fill("4")
    stock_form.get_by_role("button").click()
    expect(page.locator('tr[data-variant="Medium"] .stock-status')).to_have_text("Tersedia")
    # A photo from a camera is stored sized for phones; a file that is not one is refused.
    photos = tmp_path_factory.mktemp("photos")
    (photos / "not-a-photo.jpg").write_text("just text")
    page.get_by_label("Foto produk").set_input_files(str(photos / "not-a-photo.jpg"))
    page.get_by_role("button", name="Unggah").click()
    expect(page.get_by_role("alert")).to_have_text(
        "Berkas ini bukan foto (JPEG, PNG, WebP atau GIF)."
    )
    Image.new("RGB", (3000, 2000), (200, 60, 40)).save(photos / "shirt.png")
    page.get_by_label("Foto produk").set_input_files(str(photos / "shirt.png"))
    page.get_by_role("button", name="Unggah").click()
    photo = page.locator("#imgs ~ div img, section img").first
    expect(photo).to_be_visible()
    assert eventually(lambda: photo.evaluate("img => img.naturalWidth") == 1080)
    page.get_by_role("button", name="Terbitkan").click()
    expect(page.locator("#product-status")).to_have_text("Terbit")
    product_id = page.url.split("?")[0].rsplit("/", 1)[-1]
    screenshot(page, "admin-product-desktop")

    # A group buy with the seed's tier prices and an MOQ of 12.
    page.goto("/admin/group-buys")
    page.get_by_label("Produk").select_option(label=f"Premium T-Shirt (TSHIRT-{suffix})")
    page.get_by_label("MOQ").fill("12")
    for tier, price in ((25, 95000), (50, 85000), (75, 75000), (100, 65000)):
        page.get_by_label(f"Tingkat {tier}% (Rp)").fill(str(price))
    end = datetime.now(WIB) + timedelta(days=3)
    page.get_by_label("Berakhir (WIB)").fill(end.strftime("%Y-%m-%dT%H:%M"))
    page.get_by_label("Perkiraan selesai (WIB)").fill(
        (end + timedelta(days=14)).strftime("%Y-%m-%dT%H:%M")
    )
    page.get_by_role("button", name="Buka beli bareng").click()
    expect(page.get_by_role("status")).to_have_text("Tersimpan.")
    sessions = platform.client("group-buying").get("/api/group-buying", params={"limit": 100})
    [session] = [s for s in sessions.json()["items"] if s["productId"] == product_id]
    assert (session["targetMoq"], session["priceTier100"]) == (12, 65000)
    expect(page.locator(f'tr[data-session="{session["sessionCode"]}"]')).to_contain_text("0/12")
    screenshot(page, "admin-group-buys-desktop")

    # A refusal on the form keeps what was typed: tiers that rise.
    page.get_by_label("MOQ").fill("12")
    for tier, price in ((25, 50000), (50, 60000), (75, 70000), (100, 90000)):
        page.get_by_label(f"Tingkat {tier}% (Rp)").fill(str(price))
    page.get_by_role("button", name="Buka beli bareng").click()
    expect(page.get_by_role("alert")).to_have_text("Harga tiap tingkat harus turun atau sama.")
    expect(page.get_by_label("Tingkat 100% (Rp)")).to_have_value("90000")

    # A buyer pays for 5 Medium: Medium falls to 3, under its threshold, and a bundle is
    # ordered from the factory.
    buyer = platform.new_buyer()
    medium = next(v for v in session["variants"] if v["variantName"] == "Medium")
    joined = platform.client("group-buying").post(
        f"/api/group-buying/{session['sessionCode']}/join",
        json={"variantId": medium["variantId"], "quantity": 5},
        headers={**buyer.headers, "Idempotency-Key": uuid.uuid4().hex},
    )
    assert joined.status_code == 201, joined.text
    invoice = joined.json()["paymentUrl"].rsplit("/", 1)[-1]
    assert platform.client("xendit-sandbox").post(f"/sandbox/invoices/{invoice}/pay").is_success

    # The factory's staff ship it from the portal; another factory cannot see it.
    _, staff_email = _factory_staff(platform, factory_name)
    factory_page = new_context(browser, platform).new_page()
    login(factory_page, staff_email, "factory-password")
    factory_page.wait_for_url("**/factory")
    card = factory_page.locator("[data-po]").first
    for _ in range(40):
        if card.count():
            break
        factory_page.wait_for_timeout(500)
        factory_page.reload()
    expect(card).to_contain_text("Terbuka")
    po_number = card.get_attribute("data-po")
    po_path = card.get_by_role("link").get_attribute("href")
    screenshot(factory_page, "factory-portal-phone")

    _, other_staff = _factory_staff(platform, other_name)
    intruder = new_context(browser, platform).new_page()
    login(intruder, other_staff, "factory-password")
    expect(intruder.locator("[data-po]")).to_have_count(0)
    response = intruder.goto(po_path)
    assert response is not None and response.status == 404
    intruder.goto("/factory")
    token = intruder.locator('input[name="csrf"]').first.get_attribute("value")
    forged = intruder.request.post(
        f"{po_path}/ship", form={"csrf": token, "trackingNumber": "HIJACK"}, max_redirects=0
    )
    assert forged.status == 404

    card.get_by_label("Nomor resi").fill("JNE-BDG-12345")
    card.get_by_role("button", name=re.compile("^Kirim")).click()
    expect(factory_page.get_by_role("status")).to_have_text("Tersimpan.")
    shipped = factory_page.locator(f'[data-po="{po_number}"]')
    expect(shipped).to_contain_text("Dikirim")
    expect(shipped).to_contain_text("JNE-BDG-12345")

    # The admin receives it.
    page.goto("/admin")
    screenshot(page, "admin-dashboard-desktop")
    _dashboard_counts_dead_letters(platform, page)
    storefront = new_context(browser, platform).new_page()
    home_showing(storefront, session["sessionCode"])
    card_image = storefront.locator(f'a[href="/g/{session["sessionCode"]}"] img')
    card_image.scroll_into_view_if_needed()  # the home page's photos load lazily
    assert eventually(lambda: card_image.evaluate("img => img.naturalWidth") == 1080)
    page.goto("/admin/purchase-orders")
    row = page.locator(f'tr[data-po="{po_number}"]')
    expect(row).to_contain_text("JNE-BDG-12345")
    row.get_by_role("button", name=re.compile("^Terima")).click()
    expect(page.locator(f'tr[data-po="{po_number}"] .po-status')).to_have_text("Diterima")


def _dashboard_counts_dead_letters(platform: Platform, page: Page) -> None:
    """Work an outbox refused for good shows on the dashboard, per service, as the table has it
    (here: expiring a payment payment-service never heard of)."""
    [(row_id,)] = platform.sql(
        "INSERT INTO group_buying.outbox (kind, payload) VALUES ('expire_payment', $1::jsonb) "
        "RETURNING id",
        json.dumps({"paymentId": str(uuid.uuid4())}),
    )
    eventually(
        lambda: platform.sql(
            "SELECT 1 FROM group_buying.outbox WHERE id = $1 AND dead_lettered_at IS NOT NULL",
            row_id,
        ),
        timeout=30,
    )
    [(dead,)] = platform.sql(
        "SELECT count(*) FROM group_buying.outbox WHERE dead_lettered_at IS NOT NULL"
    )
    page.goto("/admin")
    rows = page.locator("#outbox tbody tr")
    expect(rows).to_have_count(8)
    group_buying = page.locator('#outbox tr[data-service="group-buying"]')
    expect(group_buying.locator("[data-field=deadLetters]")).to_have_text(str(dead))
    expect(group_buying).to_have_class("alert")
