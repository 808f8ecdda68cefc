"""Driving the web front end in Chromium (Debian's `chromium`, launched by Playwright)."""

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

from playwright.sync_api import (
    Browser,
    BrowserContext,
    Locator,
    Page,
    Playwright,
    expect,
    sync_playwright,
)

from laku.testing.browser import CHROMIUM, CHROMIUM_ARGS, DESKTOP, PHONE
from laku.testing.catalog import SeedCatalog
from laku.testing.platform import Platform, bearer
from tests.group_buys import open_group_buy
from tests.support import eventually

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "web"


@contextmanager
def chromium() -> Iterator[Browser]:
    """One browser for a test module. No browser is a failure, never a skip: the pages are
    tested in a real one or not at all."""
    assert CHROMIUM.exists(), (
        f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium)"
    )
    playwright: Playwright = sync_playwright().start()
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    try:
        yield browser
    finally:
        browser.close()
        playwright.stop()


def one_browser() -> Iterator[Browser]:
    """A test module's `browser` fixture: `browser = pytest.fixture(scope="module",
    name="browser")(one_browser)` in it."""
    with chromium() as running:
        yield running


def new_context(
    browser: Browser, platform: Platform, *, phone: bool = True, javascript: bool = True
) -> BrowserContext:
    context = browser.new_context(
        base_url=platform.url("web"),
        viewport=PHONE if phone else DESKTOP,
        java_script_enabled=javascript,
        locale="id-ID",
    )
    context.set_default_timeout(15_000)
    # What the page shows is waited for as long as what it does (a busy machine answers slowly).
    expect.set_options(timeout=15_000)
    return context


def fill(form: Locator, typed: dict[str, str]) -> None:
    """Type each value into the field its label names (choose it, in a select)."""
    for label, value in typed.items():
        field = form.get_by_label(label, exact=True)
        if field.evaluate("element => element.tagName") == "SELECT":
            field.select_option(value)
        else:
            field.fill(value)


def refused_keeping_input(page: Page, form: str, message: str, typed: dict[str, str]) -> Locator:
    """After a refused submit: the refusal shown, and the form (`form`, a selector) again with
    each field (by its label) as it was typed. Returns the form, to correct and send again."""
    expect(page.get_by_role("alert")).to_have_text(message)
    shown = page.locator(form)
    for label, value in typed.items():
        expect(shown.get_by_label(label)).to_have_value(value)
    return shown


def screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def reload_until(page: Page, pattern: str, timeout: float = 20.0) -> bool:
    """Reload until the page's text matches `pattern` (work done in the background shows up)."""

    def shown() -> bool:
        page.reload()
        return re.search(pattern, page.locator("main").inner_text()) is not None

    return eventually(shown, timeout, every=0.5)


def register(page: Page, name: str = "Ani") -> str:
    email = f"web-{uuid.uuid4().hex[:10]}@laku.id"
    page.goto("/register")
    page.get_by_label("Nama").fill(name)
    page.get_by_label("Email").fill(email)
    page.get_by_label("Kata sandi").fill("buyer-password")
    page.get_by_role("button", name="Daftar").click()
    page.wait_for_url("**/")
    return email


def login(page: Page, email: str, password: str) -> None:
    page.goto("/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Kata sandi").fill(password)
    page.get_by_role("button", name="Masuk").click()
    page.wait_for_load_state()


def open_session(
    platform: Platform, catalog: SeedCatalog, target_moq: int, minutes: int = 30
) -> dict[str, Any]:
    """A group buy a page shows with a countdown: ending in `minutes`."""
    return open_group_buy(platform, catalog, target_moq, ends_in=timedelta(minutes=minutes))


def publish(platform: Platform, product_id: str) -> None:
    response = platform.client("product").post(
        f"/api/products/{product_id}/publish", headers=bearer(platform.admin_token)
    )
    assert response.status_code == 200, response.text


def home_showing(page: Page, session_code: str) -> None:
    """The home page once it lists the session (its list of open group buys is cached for up
    to two seconds)."""

    def listed() -> bool:
        page.goto("/")
        return page.locator(f'a[href="/g/{session_code}"]').count() > 0

    assert eventually(listed, timeout=15, every=0.5), f"{session_code} is not on the home page"
