"""Web Push: a buyer's browser subscription is stored, every notice to the buyer is pushed to it
through the push sandbox (a local RFC 8030 push service that checks the VAPID token), encrypted
for the subscription's keys (RFC 8291), and a subscription the push service reports gone is
removed. The test is the browser: it decrypts what the push service received."""

import os
import uuid
from typing import Any

from py_vapid import Vapid02

from laku.providers.webpush.client import b64url
from laku.testing.platform import Platform, bearer
from tests.messages import (
    PUSH_SUBSCRIPTIONS,
    PushBrowser,
    notify_buyer,
    push_subscriptions,
    pushes_received,
)
from tests.support import assert_problem, eventually, snapshot


def _push_notifications(platform: Platform, key: str) -> list[dict[str, Any]]:
    return [
        dict(row)
        for row in platform.sql(
            "SELECT status, provider_message_id, attempts FROM notification.notifications"
            " WHERE key = $1 AND channel = 'push'",
            key,
        )
    ]


def test_a_buyer_notice_is_pushed_encrypted_and_a_gone_subscription_removed(
    platform: Platform,
) -> None:
    buyer = platform.new_buyer()
    browser = PushBrowser(platform)
    notification = platform.client("notification")
    subscribed = notification.post(
        PUSH_SUBSCRIPTIONS, json=browser.subscription(), headers=buyer.headers
    )
    assert subscribed.status_code == 201, subscribed.text
    assert subscribed.json()["endpoint"] == browser.endpoint
    assert [s["id"] for s in push_subscriptions(platform, buyer)] == [subscribed.json()["id"]]
    vapid_key = notification.get("/api/notifications/push/vapid-public-key").json()["publicKey"]

    key = f"order-ready_to_ship:{uuid.uuid4()}"
    text = "The goods of your order ORD-1 are in our warehouse; the courier is being booked."
    notify_buyer(platform, buyer, key, "Order ORD-1 is ready to ship", text)
    [pushed] = eventually(lambda: pushes_received(platform, browser))
    # Signed with the platform's VAPID key, encrypted as RFC 8291 says, kept a day.
    assert pushed["vapidPublicKey"] == vapid_key
    assert Vapid02.from_raw_public(vapid_key.encode()) is not None
    assert (pushed["contentEncoding"], pushed["ttl"]) == ("aes128gcm", 86400)
    assert pushed["vapidSubject"] == platform.settings.webpush_subject
    message = browser.decrypt(pushed)
    assert (message["key"], message["title"], message["body"]) == (
        key,
        "Order ORD-1 is ready to ship",
        text,
    )
    [row] = eventually(
        lambda: [r for r in _push_notifications(platform, key) if r["status"] == "sent"]
    )
    assert row["provider_message_id"].endswith(f"/messages/{pushed['id']}")
    # Told once per key: the same notice again pushes nothing.
    notify_buyer(platform, buyer, key, "Order ORD-1 is ready to ship", text)

    # The browser unsubscribed: the push service answers 410, and the subscription goes.
    expired = platform.client("push-sandbox").post(f"/sandbox/subscriptions/{browser.token}/expire")
    assert expired.status_code == 204
    gone_key = f"order-shipped:{uuid.uuid4()}"
    notify_buyer(platform, buyer, gone_key, "Order ORD-1 has shipped", "On its way.")
    assert eventually(lambda: push_subscriptions(platform, buyer) == [])
    [row] = eventually(
        lambda: [r for r in _push_notifications(platform, gone_key) if r["status"] == "sent"]
    )
    assert row["provider_message_id"] is None  # no browser left to reach
    assert len(pushes_received(platform, browser)) == 1
    # With no subscription left, a notice has no push at all.
    later = f"order-delivered:{uuid.uuid4()}"
    notify_buyer(platform, buyer, later, "Order ORD-1 has been delivered", "Delivered.")
    assert eventually(
        lambda: platform.sql("SELECT 1 FROM notification.notifications WHERE key = $1", later)
    )
    assert _push_notifications(platform, later) == []


def test_push_subscriptions_are_the_buyers_own_and_bad_ones_change_nothing(
    platform: Platform,
) -> None:
    buyer, other = platform.new_buyer(), platform.new_buyer()
    notification = platform.client("notification")
    mine = notification.post(
        PUSH_SUBSCRIPTIONS, json=PushBrowser(platform).subscription(), headers=buyer.headers
    )
    assert mine.status_code == 201, mine.text
    before = snapshot(platform, "notification")
    good = PushBrowser(platform).subscription()
    for keys in (
        {**good["keys"], "p256dh": b64url(b"\x04" + b"\x01" * 64)},  # not on the curve
        {**good["keys"], "p256dh": "not base64!"},
        {**good["keys"], "auth": b64url(os.urandom(8))},
    ):
        refused = notification.post(
            PUSH_SUBSCRIPTIONS, json={**good, "keys": keys}, headers=buyer.headers
        )
        assert_problem(refused, 422)
    assert_problem(notification.post(PUSH_SUBSCRIPTIONS, json=good), 401)
    admin = bearer(platform.admin_token)
    assert_problem(notification.post(PUSH_SUBSCRIPTIONS, json=good, headers=admin), 403)
    theirs = f"{PUSH_SUBSCRIPTIONS}/{mine.json()['id']}"
    assert_problem(notification.delete(theirs, headers=other.headers), 404)
    assert snapshot(platform, "notification") == before
    assert notification.delete(theirs, headers=buyer.headers).status_code == 204
    assert push_subscriptions(platform, buyer) == []
