"""The pages' safety and manners in Chromium: escaping, CSRF, the session cookie, the headers,
who may open which area, and refusals shown on the form in the page's language."""

import pytest
from playwright.sync_api import Browser, expect

from laku.testing.catalog import create_seed_catalog
from laku.testing.platform import Platform, bearer
from tests.web import home_showing, new_context, one_browser, open_session, publish, register

SCRIPT = "<script>alert(1)</script>"


browser = pytest.fixture(scope="module", name="browser")(one_browser)


def test_a_product_named_like_a_script_shows_as_text(platform: Platform, browser: Browser) -> None:
    catalog = create_seed_catalog(platform)
    renamed = platform.client("product").patch(
        f"/api/products/{catalog.product_id}",
        json={"name": SCRIPT, "description": f"<img src=x onerror=alert(2)> {SCRIPT}"},
        headers=bearer(platform.admin_token),
    )
    assert renamed.status_code == 200, renamed.text
    publish(platform, catalog.product_id)
    session = open_session(platform, catalog, target_moq=10)
    page = new_context(browser, platform).new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    home_showing(page, session["sessionCode"])
    expect(page.locator(f'a[href="/g/{session["sessionCode"]}"] h2')).to_have_text(SCRIPT)
    page.goto(f"/g/{session['sessionCode']}")
    expect(page.locator("h1")).to_have_text(SCRIPT)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.content()
    assert page.locator("main script, main img[src=x]").count() == 0
    assert dialogs == []


def test_a_forged_post_is_refused(platform: Platform, browser: Browser) -> None:
    context = new_context(browser, platform)
    page = context.new_page()
    register(page, "Dewi")
    address = {
        "label": "Forged",
        "recipientName": "Mallory",
        "phone": "+6281234567890",
        "street": "Jl. Palsu 1",
        "city": "Jakarta",
        "province": "DKI Jakarta",
        "postalCode": "12190",
    }
    # The browser sends its cookies with a post from another page, but not the form's token.
    for form in (address, {**address, "csrf": "0" * 64}):
        forged = page.request.post("/me/addresses", form=form, max_redirects=0)
        assert forged.status == 403
        assert "Formulir kedaluwarsa atau tidak sah" in forged.text()
    page.goto("/me/addresses")
    expect(page.get_by_text("Belum ada alamat.")).to_be_visible()
    # Logging out takes a token too: a forged post keeps the buyer signed in.
    assert page.request.post("/logout", max_redirects=0).status == 403
    page.goto("/me/addresses")
    expect(page.locator("h1")).to_have_text("Alamat")
    context.close()


def test_the_session_cookie_and_the_headers(platform: Platform, browser: Browser) -> None:
    context = new_context(browser, platform)
    page = context.new_page()
    response = page.goto("/")
    assert response is not None
    policy = response.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in policy
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert response.headers["x-content-type-options"] == "nosniff"
    register(page, "Eka")
    cookies = {cookie["name"]: cookie for cookie in context.cookies()}
    session = cookies["laku_session"]
    assert session["httpOnly"] and session["sameSite"] == "Lax"
    assert cookies["laku_csrf"]["httpOnly"]
    assert page.evaluate("document.cookie") in ("", "laku_lang=id")  # no token readable by script
    context.close()


def test_a_buyer_cannot_open_the_admin_console_or_the_factory_portal(
    platform: Platform, browser: Browser
) -> None:
    anonymous = new_context(browser, platform).new_page()
    anonymous.goto("/admin")
    assert anonymous.url.endswith("/login?next=/admin")
    context = new_context(browser, platform)
    page = context.new_page()
    register(page, "Fajar")
    for area in ("/admin", "/admin/factories", "/factory", "/factory/purchase-orders"):
        response = page.goto(area)
        assert response is not None and response.status == 403, area
        expect(page.get_by_role("alert")).to_have_text("Anda tidak punya akses ke halaman ini.")
    context.close()


def test_a_refusal_shows_on_the_form_with_the_input_kept_in_the_pages_language(
    platform: Platform, browser: Browser
) -> None:
    context = new_context(browser, platform)
    page = context.new_page()
    email = register(page, "Gita")
    page.get_by_role("button", name="Keluar").click()
    page.goto("/register")
    page.get_by_label("Nama").fill("Gita Kedua")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Kata sandi").fill("another-password")
    page.get_by_role("button", name="Daftar").click()
    expect(page.get_by_role("alert")).to_have_text("Email ini sudah terdaftar.")
    expect(page.get_by_label("Nama")).to_have_value("Gita Kedua")
    expect(page.get_by_label("Email")).to_have_value(email)

    page.get_by_role("link", name="EN", exact=True).click()
    page.goto("/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill("wrong-password")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_have_text("Wrong email or password.")
    expect(page.get_by_label("Email")).to_have_value(email)
    context.close()
