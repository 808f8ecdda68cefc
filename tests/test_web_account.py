"""The buyer's account pages in Chromium: a withdrawal from the wallet to a bank account, and
the addresses (add, edit, make default, delete), each checked against what the services hold."""

import re
import uuid
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from laku.testing.platform import Account, Platform, bearer
from tests.support import eventually
from tests.web import (
    login,
    new_context,
    one_browser,
    refused_keeping_input,
    screenshot,
)

browser = pytest.fixture(scope="module", name="browser")(one_browser)


def _signed_in_buyer(platform: Platform, browser: Browser) -> tuple[Account, Page]:
    buyer = platform.new_buyer("Ani Lestari")
    page = new_context(browser, platform).new_page()
    login(page, buyer.email, "buyer-password")
    page.wait_for_url("**/")
    return buyer, page


def _held(platform: Platform, buyer: Account, service: str, path: str) -> Any:
    response = platform.client(service).get(path, headers=buyer.headers)
    assert response.status_code == 200, response.text
    return response.json()


def _withdraw(page: Page, amount: str, bank: str, number: str, holder: str) -> None:
    form = page.locator('form[action="/me/wallet/withdrawals"]')
    form.get_by_label("Jumlah (Rp)").fill(amount)
    form.get_by_label("Bank").select_option(bank)
    form.get_by_label("Nomor rekening").fill(number)
    form.get_by_label("Nama pemilik rekening").fill(holder)
    form.get_by_role("button", name="Tarik ke rekening bank").click()


def test_a_buyer_withdraws_from_the_wallet_to_a_bank_account(
    platform: Platform, browser: Browser
) -> None:
    buyer, page = _signed_in_buyer(platform, browser)
    credited = platform.client("wallet").post(
        "/api/wallets/credits",
        json={
            "userId": buyer.id,
            "amount": 200_000,
            "reason": "tier_refund",
            "reference": f"web-test:participant:{uuid.uuid4()}",
            "idempotencyKey": uuid.uuid4().hex,
        },
        headers=bearer(platform.admin_token),
    )
    assert credited.status_code == 201, credited.text
    page.goto("/me/wallet")
    expect(page.locator("#balance")).to_have_text("Rp 200.000")

    # More than the balance: refused on the form, everything typed kept, nothing moved.
    _withdraw(page, "250.000", "BNI", "0123456789", "Ani Lestari")
    typed = {
        "Jumlah (Rp)": "250.000",
        "Bank": "BNI",
        "Nomor rekening": "0123456789",
        "Nama pemilik rekening": "Ani Lestari",
    }
    refused_keeping_input(
        page, 'form[action="/me/wallet/withdrawals"]', "Saldo tidak cukup.", typed
    )
    # An account number a bank would not have: the field is named.
    _withdraw(page, "150.000", "BNI", "01-23", "Ani Lestari")
    expect(page.get_by_role("alert")).to_have_text("Periksa kembali isian Anda: Nomor rekening.")
    assert _held(platform, buyer, "wallet", "/api/wallets/me/withdrawals")["items"] == []

    _withdraw(page, "150.000", "BNI", "0123456789", "Ani Lestari")
    expect(page.get_by_role("status")).to_have_text("Penarikan diajukan.")
    expect(page.locator("#balance")).to_have_text("Rp 50.000")
    expect(page.locator(".tx-withdrawal")).to_contain_text("-Rp 150.000")
    row = page.locator("#withdrawals tbody tr").first
    expect(row).to_contain_text("Rp 150.000")
    expect(row).to_contain_text("BNI 0123456789")
    expect(row.locator(".withdrawal-status")).to_have_text(re.compile("^(Diproses|Berhasil)$"))
    [withdrawal] = _held(platform, buyer, "wallet", "/api/wallets/me/withdrawals")["items"]
    assert (withdrawal["amount"], withdrawal["bankCode"], withdrawal["accountNumber"]) == (
        150_000,
        "BNI",
        "0123456789",
    )
    assert _held(platform, buyer, "wallet", "/api/wallets/me")["balance"] == 50_000
    screenshot(page, "wallet-withdrawal-phone")
    # A reload shows the page again; it does not ask for the money twice.
    page.reload()
    assert len(_held(platform, buyer, "wallet", "/api/wallets/me/withdrawals")["items"]) == 1

    # The bank pays it out (the Xendit sandbox settles the payout): the page shows it done.
    def held() -> dict[str, Any]:
        [withdrawal] = _held(platform, buyer, "wallet", "/api/wallets/me/withdrawals")["items"]
        return withdrawal

    payout_id = eventually(lambda: held()["payoutId"])
    settled = platform.client("xendit-sandbox").post(f"/sandbox/payouts/{payout_id}/succeed")
    assert settled.status_code == 200, settled.text
    eventually(lambda: held()["status"] == "succeeded", timeout=30)
    page.reload()
    expect(row.locator(".withdrawal-status")).to_have_text("Berhasil")
    assert _held(platform, buyer, "wallet", "/api/wallets/me")["balance"] == 50_000


def _fill_address(page: Page, label: str, city: str, postal_code: str) -> None:
    form = page.locator("#address-form")
    form.get_by_label("Label (mis. Rumah)").fill(label)
    form.get_by_label("Nama penerima").fill("Ani Lestari")
    form.get_by_label("Nomor HP penerima").fill("+6281234567890")
    form.get_by_label("Alamat lengkap").fill(f"Jl. Melati No. 1, {city}")
    form.get_by_label("Kota/Kabupaten").fill(city)
    form.get_by_label("Provinsi").fill("Jawa Barat")
    form.get_by_label("Kode pos").fill(postal_code)


def test_a_buyer_adds_edits_defaults_and_deletes_addresses(
    platform: Platform, browser: Browser
) -> None:
    buyer, page = _signed_in_buyer(platform, browser)
    page.goto("/me/addresses")
    _fill_address(page, "Rumah", "Bandung", "40115")
    page.locator("#address-form").get_by_label("Jadikan utama").check()
    page.get_by_role("button", name="Simpan").click()
    _fill_address(page, "Kantor", "Bekasi", "17141")
    page.get_by_role("button", name="Simpan").click()
    home = page.locator(".address", has=page.locator("h2", has_text="Rumah"))
    office = page.locator(".address", has=page.locator("h2", has_text="Kantor"))
    expect(home.locator(".badge")).to_have_text("Utama")
    expect(office.locator(".badge")).to_have_count(0)

    # Edit the office: the form comes filled in; a malformed postal code is refused with the
    # field named and the edit kept; then saved.
    office.get_by_role("link", name="Ubah Kantor").click()
    form = page.locator("#address-form")
    expect(page.get_by_role("heading", name="Ubah alamat")).to_be_visible()
    expect(form.get_by_label("Label (mis. Rumah)")).to_have_value("Kantor")
    expect(form.get_by_label("Kota/Kabupaten")).to_have_value("Bekasi")
    form.get_by_label("Kota/Kabupaten").fill("Kota Bekasi")
    form.get_by_label("Kode pos").fill("171")
    form.get_by_role("button", name="Simpan").click()
    form = refused_keeping_input(
        page,
        "#address-form",
        "Periksa kembali isian Anda: Kode pos.",
        {"Kota/Kabupaten": "Kota Bekasi", "Kode pos": "171"},
    )
    form.get_by_label("Kode pos").fill("17142")
    form.get_by_role("button", name="Simpan").click()
    expect(office).to_contain_text("Kota Bekasi")
    expect(office).to_contain_text("17142")
    screenshot(page, "addresses-phone")

    # The office becomes the default, then the home is deleted.
    office.get_by_role("button", name="Jadikan utama Kantor").click()
    expect(office.locator(".badge")).to_have_text("Utama")
    expect(home.locator(".badge")).to_have_count(0)
    home.get_by_role("button", name="Hapus Rumah").click()
    expect(home).to_have_count(0)
    [held] = _held(platform, buyer, "address", "/api/addresses")
    assert (held["label"], held["city"], held["postalCode"], held["isDefault"]) == (
        "Kantor",
        "Kota Bekasi",
        "17142",
        True,
    )
