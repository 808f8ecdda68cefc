"""Web Push from the storefront: the service worker at /sw.js, the button on the buyer's
notices page, the subscription the page posts (CSRF-checked) stored through notification-service,
a notice then pushed to it, and the form that turns it off.

A real Chromium here cannot finish `pushManager.subscribe()`: its push service is Google's (FCM),
which this machine cannot reach (and headless Chromium refuses the step outright, "Registration
failed - permission denied", even with notifications granted). So the browser is driven up to
that step (the service worker registered, the key fetched, the refusal shown), and the
subscription is posted as the page would post it with a browser's real P-256 keys and an endpoint
at the push sandbox (the push service stand-in), which then receives the encrypted notice the
test decrypts as the browser would."""

from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from laku.testing.platform import Account, Platform
from tests.messages import PushBrowser as PushKeys
from tests.messages import notify_buyer as _notify
from tests.messages import push_subscriptions as _subscriptions
from tests.messages import pushes_received as _received
from tests.support import eventually as _eventually
from tests.web import login, new_context, one_browser

NOTICES = "/me/notifications"
SUBSCRIBE = "/me/push-subscriptions"


browser = pytest.fixture(scope="module", name="browser")(one_browser)


def _signed_in(browser: Browser, platform: Platform, **options: Any) -> tuple[Page, Account]:
    buyer = platform.new_buyer("Putri")
    page = new_context(browser, platform, **options).new_page()
    login(page, buyer.email, "buyer-password")
    return page, buyer


def test_the_service_worker_is_served_at_the_root(platform: Platform) -> None:
    response = platform.client("web").get("/sw.js")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")
    assert response.headers["service-worker-allowed"] == "/"
    assert "unsafe-inline" not in response.headers["content-security-policy"]
    worker = response.text
    # A push shows the payload's title and body, tagged with the notice's key ...
    assert 'addEventListener("push"' in worker
    assert "event.data.json()" in worker
    assert "showNotification(notice.title" in worker
    assert "body: notice.body" in worker and "tag: notice.key" in worker
    # ... and a click opens the buyer's notices.
    assert 'addEventListener("notificationclick"' in worker
    assert 'openWindow("/me/notifications")' in worker


def test_a_buyer_turns_push_on_is_pushed_a_notice_and_turns_it_off(
    platform: Platform, browser: Browser
) -> None:
    # Without JavaScript the page is as before: the button is there but hidden.
    bare, _ = _signed_in(browser, platform, javascript=False)
    bare.goto(NOTICES)
    button = bare.locator("#push-on")
    expect(button).to_have_text("Aktifkan notifikasi push")
    expect(button).to_be_hidden()
    assert bare.locator("script:not([src])").count() == 0
    bare.context.close()

    page, buyer = _signed_in(browser, platform)
    page.goto(NOTICES)
    # Chromium has service workers and Push (127.0.0.1 is a secure context): shown.
    expect(page.get_by_role("button", name="Aktifkan notifikasi push")).to_be_visible()
    notification = platform.client("notification")
    vapid = notification.get("/api/notifications/push/vapid-public-key").json()["publicKey"]
    key = page.request.get(f"{SUBSCRIBE}/vapid-public-key")
    assert key.status == 200 and key.json() == {"publicKey": vapid}

    keys = PushKeys(platform)
    subscription = keys.subscription()
    token = page.locator("#push-on").get_attribute("data-csrf")
    assert token
    # The browser sends its cookies with a post from another page, but not the page's token.
    for headers in ({}, {"x-csrf-token": "0" * 64}):
        forged = page.request.post(SUBSCRIBE, data=subscription, headers=headers)
        assert forged.status == 403
    assert _subscriptions(platform, buyer) == []

    stored = page.request.post(SUBSCRIBE, data=subscription, headers={"x-csrf-token": token})
    assert stored.status == 201, stored.text()
    assert stored.json()["endpoint"] == keys.endpoint
    assert stored.json()["message"] == "Notifikasi push aktif di browser ini."
    [mine] = _subscriptions(platform, buyer)
    assert (mine["id"], mine["endpoint"]) == (stored.json()["id"], keys.endpoint)

    notice = f"order-shipped:{mine['id']}"
    _notify(platform, buyer, notice, "Pesanan ORD-7 dikirim", "Paket Anda dalam perjalanan.")
    [pushed] = _eventually(lambda: _received(platform, keys))
    message = keys.decrypt(pushed)
    assert (message["key"], message["title"], message["body"]) == (
        notice,
        "Pesanan ORD-7 dikirim",
        "Paket Anda dalam perjalanan.",
    )

    # The page lists the browser, with a form (no script needed) that turns it off.
    page.goto("/language/en?next=/me/notifications")
    expect(page.get_by_role("button", name="Turn on push notifications")).to_be_visible()
    listed = page.locator(f'li[data-endpoint="{keys.endpoint}"]')
    expect(listed).to_contain_text("127.0.0.1")
    forged = page.request.post(f"{SUBSCRIBE}/{mine['id']}/delete", max_redirects=0)
    assert forged.status == 403
    assert [s["id"] for s in _subscriptions(platform, buyer)] == [mine["id"]]
    listed.get_by_role("button", name="Turn off").click()
    page.wait_for_url(f"**{NOTICES}")
    assert _subscriptions(platform, buyer) == []
    expect(page.locator("li[data-endpoint]")).to_have_count(0)
    page.context.close()


def test_the_button_registers_the_worker_and_reaches_the_subscribe_step(
    platform: Platform, browser: Browser
) -> None:
    page, buyer = _signed_in(browser, platform)
    page.context.grant_permissions(["notifications"])
    page.goto(NOTICES)
    asked_for_key: list[str] = []
    page.on(
        "request",
        lambda request: (
            asked_for_key.append(request.url)
            if request.url.endswith(f"{SUBSCRIBE}/vapid-public-key")
            else None
        ),
    )
    page.get_by_role("button", name="Aktifkan notifikasi push").click()
    # subscribe() is refused here (no push service: see the module's docstring), and the page
    # says so rather than claiming push is on.
    expect(page.get_by_role("status")).to_contain_text(
        "Notifikasi push tidak dapat diaktifkan di browser ini", timeout=60_000
    )
    assert asked_for_key
    worker = page.evaluate(
        "navigator.serviceWorker.getRegistration('/')"
        ".then(r => r && r.active ? [r.scope, r.active.scriptURL] : null)"
    )
    assert worker == [f"{platform.url('web')}/", f"{platform.url('web')}/sw.js"]
    expect(page.get_by_role("button", name="Aktifkan notifikasi push")).to_be_enabled()
    assert _subscriptions(platform, buyer) == []
    page.context.close()
