"""Buyers told of their group buys over real processes: a buyer joins, pays, and the group
succeeds, fails or is cancelled, and the refund lands; each notice reaches the buyer's in-app
inbox, the SMTP sandbox and (for a buyer with a phone) the WhatsApp sandbox, once. Also the
two endpoints underneath: auth-service's contact lookup and notification-service's
notifications to users, keyed so that a repeated event tells nobody twice.
"""

import random
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any, TypeVar

from laku.auth.client import AuthClient
from laku.core.http import new_http_client
from laku.notification.client import NotificationClient, UserNotification, UserNotificationsOut
from laku.testing.catalog import create_seed_catalog, created
from laku.testing.database import run
from laku.testing.platform import Platform, bearer
from tests.group_buys import close_group_buy, end_now, open_group_buy
from tests.messages import emails_to, whatsapp_messages_to
from tests.support import admin_headers, assert_problem, eventually, ok, snapshot

OPEN = ("forming", "active", "moq_reached")
NOTIFY_USERS = "/api/notifications/users"
LOOKUP = "/api/auth/users/lookup"
T = TypeVar("T")


# --- helpers --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Buyer:
    id: str
    email: str
    name: str
    phone: str | None
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.token)


def _new_phone() -> str:
    """+62813...: apart from the catalog's factories (+62812, 7 digits) and other tests' phones."""
    return f"+62813{random.randrange(10**7, 10**8)}"


def _register(platform: Platform, *, phone: bool = True) -> Buyer:
    email = f"buyer-{uuid.uuid4().hex[:10]}@laku.id"
    name = f"Siti {uuid.uuid4().hex[:4].upper()}"
    body = {"email": email, "password": "buyer-password", "name": name}
    number = _new_phone() if phone else None
    if number:
        body["phone"] = number
    user = created(platform.client("auth").post("/api/auth/register", json=body))
    return Buyer(user["id"], email, name, number, platform.login(email, "buyer-password"))


def _service_headers(platform: Platform) -> dict[str, str]:
    return platform.service_headers("group-buying")


def _participant_status(platform: Platform, session_id: str, participant_id: str) -> str:
    page = ok(
        platform.client("group-buying").get(
            f"/api/group-buying/{session_id}/participants",
            params={"limit": 100},
            headers=admin_headers(platform),
        )
    )
    [participant] = [p for p in page["items"] if p["id"] == participant_id]
    return participant["status"]


def _join(
    platform: Platform, buyer: Buyer, session: dict[str, Any], variant_id: str, quantity: int
) -> dict[str, Any]:
    return created(
        platform.client("group-buying").post(
            f"/api/group-buying/{session['id']}/join",
            json={"variantId": variant_id, "quantity": quantity},
            headers=buyer.headers,
        )
    )


def _pay(platform: Platform, buyer: Buyer, session_id: str, participant: dict[str, Any]) -> None:
    """Pays the join's invoice in the Xendit sandbox; returns once group-buying has it paid."""
    payment = ok(
        platform.client("payment").get(
            f"/api/payments/{participant['paymentId']}", headers=buyer.headers
        )
    )
    invoices = ok(platform.client("xendit-sandbox").get("/sandbox/invoices"))
    [invoice] = [i for i in invoices if i["external_id"] == payment["paymentCode"]]
    ok(platform.client("xendit-sandbox").post(f"/sandbox/invoices/{invoice['id']}/pay"))
    eventually(lambda: _participant_status(platform, session_id, participant["id"]) == "paid")


def _inbox(platform: Platform, buyer: Buyer) -> list[dict[str, Any]]:
    page = ok(
        platform.client("notification").get(
            "/api/notifications/me", params={"limit": 100}, headers=buyer.headers
        )
    )
    return page["items"]


def _channels(platform: Platform, user_id: str) -> Counter[tuple[str, str]]:
    """(key, channel) of every notification stored for the user."""
    rows = platform.sql(
        "SELECT key, channel FROM notification.notifications WHERE user_id = $1",
        uuid.UUID(user_id),
    )
    return Counter((row["key"], row["channel"]) for row in rows)


@dataclass(frozen=True)
class Told:
    """One notice as the buyer received it on each channel."""

    in_app: dict[str, Any]
    email: dict[str, Any]
    whatsapp: dict[str, Any] | None


def _told(platform: Platform, buyer: Buyer, key: str) -> Told:
    """Waits until the notice keyed `key` is in the buyer's inbox, mailbox and (with a phone)
    on WhatsApp, and checks the three say the same."""

    def in_app() -> dict[str, Any] | None:
        return next((n for n in _inbox(platform, buyer) if n["key"] == key), None)

    notice = eventually(in_app)
    assert notice["channel"] == "in_app" and notice["status"] == "sent"

    def mailed() -> dict[str, Any] | None:
        mails = emails_to(platform, buyer.email)
        return next((m for m in mails if m["subject"] == notice["subject"]), None)

    email = eventually(mailed)
    assert email["body"] == f"Hi {buyer.name},\n\n{notice['text']}\n"
    whatsapp = None
    if buyer.phone is not None:

        def sent() -> dict[str, Any] | None:
            messages = whatsapp_messages_to(platform, buyer.phone)
            return next((m for m in messages if m["text"] == notice["text"]), None)

        whatsapp = eventually(sent)
        assert whatsapp["type"] == "text"
    return Told(notice, email, whatsapp)


def _told_once_each(platform: Platform, buyer: Buyer, keys: list[str]) -> None:
    """Exactly these notices, each once on every channel the buyer has."""
    assert sorted(n["key"] for n in _inbox(platform, buyer)) == sorted(keys)
    mails = emails_to(platform, buyer.email)
    assert len(mails) == len(keys)
    assert len({m["subject"] for m in mails}) == len(keys)
    channels = ["in_app", "email"] + (["whatsapp"] if buyer.phone else [])
    assert _channels(platform, buyer.id) == Counter(
        (key, channel) for key in keys for channel in channels
    )
    if buyer.phone is not None:
        assert len(whatsapp_messages_to(platform, buyer.phone)) == len(keys)


# --- the events -----------------------------------------------------------------------------


def test_a_buyer_is_told_of_joining_paying_success_and_the_tier_refund(
    platform: Platform,
) -> None:
    catalog = create_seed_catalog(platform, reorder_threshold=0)
    session = open_group_buy(platform, catalog, target_moq=5)
    code = session["sessionCode"]
    buyer = _register(platform)
    joined = _join(platform, buyer, session, catalog.variants["M"], 5)  # 100,000 a unit at 0%
    participant = joined["participant"]

    told = _told(platform, buyer, f"joined:{participant['id']}")
    assert told.in_app["subject"] == f"You joined {code}"
    text = told.in_app["text"]
    assert text.startswith(f"You joined {code}: Premium T-Shirt (Medium) x 5. Pay Rp 475.000 at ")
    assert joined["paymentUrl"] in text and text.endswith(" WIB.")
    assert told.whatsapp is not None and told.whatsapp["text"] == text

    _pay(platform, buyer, session["id"], participant)
    told = _told(platform, buyer, f"paid:{participant['id']}")
    assert told.in_app["subject"] == f"Payment received for {code}"
    assert told.in_app["text"].startswith(f"We received Rp 475.000 for {code} (Premium T-Shirt).")

    end_now(platform, session["id"])
    assert close_group_buy(platform, session["id"])["status"] == "success"
    told = _told(platform, buyer, f"succeeded:{participant['id']}")
    assert told.in_app["subject"] == f"Group buy {code} succeeded"
    assert told.in_app["text"] == (  # the 100% tier: 65,000; (95,000 - 65,000) x 5 back
        f"{code} (Premium T-Shirt) reached its minimum order. Your final price is Rp 65.000 per "
        "unit. Rp 150.000 will be refunded to your Laku wallet."
    )

    [refund] = platform.sql(
        "SELECT id FROM payment.refunds WHERE payment_id = $1",
        uuid.UUID(participant["paymentId"]),
    )
    told = _told(platform, buyer, f"refund:{refund['id']}")
    assert told.in_app["subject"] == "Rp 150.000 refunded to your Laku wallet"
    assert told.in_app["text"] == (
        f"Rp 150.000 refunded to your Laku wallet (tier refund) for {code}: Premium T-Shirt "
        "(Medium) x 5."
    )
    wallet = ok(platform.client("wallet").get("/api/wallets/me", headers=buyer.headers))
    assert wallet["balance"] == 150000  # told once the money is there

    # The goods were in hand at the close: the order is ready to ship at once.
    [order] = ok(platform.client("order").get("/api/orders", headers=buyer.headers))["items"]
    told = _told(platform, buyer, f"order-ready_to_ship:{order['id']}")
    assert told.in_app["subject"] == f"Order {order['orderNumber']} is ready to ship"
    assert told.in_app["text"] == (
        f"The goods of your order {order['orderNumber']} (Premium T-Shirt (Medium) x 5) are in "
        "our warehouse; the courier is being booked."
    )

    _told_once_each(
        platform,
        buyer,
        [f"{event}:{participant['id']}" for event in ("joined", "paid", "succeeded")]
        + [f"refund:{refund['id']}", f"order-ready_to_ship:{order['id']}"],
    )


def test_a_failed_group_tells_its_buyers_of_the_full_refund(platform: Platform) -> None:
    catalog = create_seed_catalog(platform, reorder_threshold=0)
    session = open_group_buy(platform, catalog, target_moq=10)
    code = session["sessionCode"]
    with_phone, without_phone = _register(platform), _register(platform, phone=False)
    first = _join(platform, with_phone, session, catalog.variants["S"], 2)["participant"]
    second = _join(platform, without_phone, session, catalog.variants["L"], 1)["participant"]
    _pay(platform, with_phone, session["id"], first)
    _pay(platform, without_phone, session["id"], second)

    end_now(platform, session["id"])
    assert close_group_buy(platform, session["id"])["status"] == "failed"
    for buyer, participant, paid in ((with_phone, first, 190000), (without_phone, second, 95000)):
        told = _told(platform, buyer, f"failed:{participant['id']}")
        assert told.in_app["subject"] == f"Group buy {code} did not reach its minimum"
        amount = f"Rp {paid:,}".replace(",", ".")
        assert told.in_app["text"] == (
            f"{code} (Premium T-Shirt) closed below its minimum order of 10. Your {amount} will "
            "be refunded in full to your Laku wallet."
        )
        [refund] = platform.sql(
            "SELECT id FROM payment.refunds WHERE payment_id = $1",
            uuid.UUID(participant["paymentId"]),
        )
        told = _told(platform, buyer, f"refund:{refund['id']}")
        assert told.in_app["text"].startswith(
            f"{amount} refunded to your Laku wallet (full refund, the group missed its minimum "
            f"order) for {code}: Premium T-Shirt"
        )
        _told_once_each(
            platform,
            buyer,
            [f"{event}:{participant['id']}" for event in ("joined", "paid", "failed")]
            + [f"refund:{refund['id']}"],
        )
    # The buyer without a phone was told in the app and by e-mail only.
    assert {channel for _, channel in _channels(platform, without_phone.id)} == {"in_app", "email"}


def test_a_cancelled_session_tells_the_paid_of_their_refund_and_the_unpaid_of_their_invoice(
    platform: Platform,
) -> None:
    catalog = create_seed_catalog(platform, reorder_threshold=0)
    session = open_group_buy(platform, catalog, target_moq=10)
    code = session["sessionCode"]
    paid_buyer, unpaid_buyer = _register(platform), _register(platform)
    paid = _join(platform, paid_buyer, session, catalog.variants["L"], 1)["participant"]
    unpaid = _join(platform, unpaid_buyer, session, catalog.variants["L"], 1)["participant"]
    _pay(platform, paid_buyer, session["id"], paid)

    ok(
        platform.client("group-buying").post(
            f"/api/group-buying/{session['id']}/cancel", headers=admin_headers(platform)
        )
    )
    told = _told(platform, paid_buyer, f"cancelled:{paid['id']}")
    assert told.in_app["subject"] == f"Group buy {code} cancelled"
    assert told.in_app["text"] == (
        f"{code} (Premium T-Shirt) was cancelled. Your Rp 95.000 will be refunded in full to "
        "your Laku wallet."
    )
    # The cancel notice and the refund leave through different outboxes: wait for the refund.
    [refund] = eventually(
        lambda: platform.sql(
            "SELECT id FROM payment.refunds WHERE payment_id = $1", uuid.UUID(paid["paymentId"])
        )
    )
    told = _told(platform, paid_buyer, f"refund:{refund['id']}")
    assert told.in_app["text"].startswith(
        "Rp 95.000 refunded to your Laku wallet (full refund, the group buy was cancelled)"
    )
    told = _told(platform, unpaid_buyer, f"cancelled:{unpaid['id']}")
    assert told.in_app["text"] == (
        f"{code} (Premium T-Shirt) was cancelled. Its invoice can no longer be paid."
    )

    _told_once_each(
        platform,
        paid_buyer,
        [
            *(f"{event}:{paid['id']}" for event in ("joined", "paid", "cancelled")),
            f"refund:{refund['id']}",
        ],
    )
    _told_once_each(platform, unpaid_buyer, [f"joined:{unpaid['id']}", f"cancelled:{unpaid['id']}"])


def test_a_notification_outage_delays_the_notice_but_not_the_join(platform: Platform) -> None:
    catalog = create_seed_catalog(platform, reorder_threshold=0)
    session = open_group_buy(platform, catalog, target_moq=10)
    buyer = _register(platform)
    platform.supervisor.stop("notification")
    try:
        participant = _join(platform, buyer, session, catalog.variants["S"], 1)["participant"]
        assert participant["status"] == "pending_payment"
        key = f"joined:{participant['id']}"

        def attempted() -> bool:
            [row] = platform.sql(
                "SELECT attempts, delivered_at FROM group_buying.outbox "
                "WHERE kind = 'notify_buyers' AND payload->'items'->0->>'key' = $1",
                key,
            )
            return row["attempts"] > 0 and row["delivered_at"] is None

        eventually(attempted)  # tried while notification-service is down, not lost
    finally:
        platform.supervisor.start_one("notification")
        platform.supervisor.wait_ready()

    _told(platform, buyer, key)
    _told_once_each(platform, buyer, [key])


# --- notification-service: notifications to users ------------------------------------------


async def _notify_users(
    platform: Platform, items: list[UserNotification], keys: list[str]
) -> list[UserNotificationsOut]:
    """notify_users with the typed client, once per idempotency key in `keys`."""
    http = new_http_client(5.0)
    try:
        tokens = platform.service_token_source(http, "group-buying")
        client = NotificationClient(platform.url("notification"), http, tokens)
        return [await client.notify_users(items, idempotency_key=key) for key in keys]
    finally:
        await http.aclose()


def test_notify_users_tells_each_key_once_per_channel(platform: Platform) -> None:
    with_phone, without_phone = _register(platform), _register(platform, phone=False)
    nobody = uuid.uuid4()
    batch = uuid.uuid4().hex[:8]
    items = [
        UserNotification(
            user_id=uuid.UUID(buyer.id),
            key=f"test-{batch}:{number}",
            subject=f"Notice {batch} {number}",
            text=f"Notice {number} of batch {batch}.",
        )
        for number, buyer in enumerate([with_phone, without_phone])
    ] + [UserNotification(user_id=nobody, key=f"test-{batch}:nobody", subject="x", text="x")]

    # The same items again under another key, and again under the first one.
    first, again, replayed = run(
        _notify_users(platform, items, [f"test:{batch}:1", f"test:{batch}:2", f"test:{batch}:1"])
    )
    # In the app and by e-mail for both, on WhatsApp for the one with a phone.
    assert (first.created, first.already_sent, first.unknown_users) == (5, 0, 1)
    assert (again.created, again.already_sent, again.unknown_users) == (0, 5, 1)
    assert replayed == again
    for buyer, item in zip([with_phone, without_phone], items[:2], strict=True):
        told = _told(platform, buyer, item.key)
        assert (told.in_app["subject"], told.in_app["text"]) == (item.subject, item.text)
        assert told.in_app["userId"] == buyer.id
        _told_once_each(platform, buyer, [item.key])
    assert {channel for _, channel in _channels(platform, without_phone.id)} == {"in_app", "email"}
    [row] = platform.sql(
        "SELECT count(*) AS n FROM notification.notifications WHERE user_id = $1", nobody
    )
    assert row["n"] == 0


def _settled_snapshot(platform: Platform) -> dict[str, dict[str, str]]:
    """The schema once no delivery is changing it (two equal reads in a row)."""
    previous = snapshot(platform, "notification")
    while (current := snapshot(platform, "notification")) != previous:
        previous = current
    return current


def _item(user_id: str, key: str, **fields: Any) -> dict[str, Any]:
    return {"userId": user_id, "key": key, "subject": "Hai", "text": "Hai", **fields}


def test_notify_users_refuses_bad_batches_whole(platform: Platform) -> None:
    buyer = _register(platform)
    good = _item(buyer.id, f"test-{uuid.uuid4().hex}")
    bodies = [
        {"items": []},
        {"items": [good, _item(buyer.id, good["key"])]},  # one key twice
        {"items": [good, _item(buyer.id, "has a space")]},
        {
            "items": [
                good,
                {k: v for k, v in _item(buyer.id, "no-subject").items() if k != "subject"},
            ]
        },
        {"items": [good, _item(buyer.id, "long", text="x" * 4097)]},
        {"items": [good, _item("not-a-uuid", "bad-user")]},
        {"items": [good] + [_item(buyer.id, f"k{n}") for n in range(2000)]},
        {"items": [{**good, "channel": "whatsapp"}]},
    ]
    api = platform.client("notification")
    before = _settled_snapshot(platform)
    for body in bodies:
        assert_problem(api.post(NOTIFY_USERS, json=body, headers=admin_headers(platform)), 422)
    assert_problem(api.post(NOTIFY_USERS, json={"items": [good]}), 401, "unauthorized")
    assert_problem(
        api.post(NOTIFY_USERS, json={"items": [good]}, headers=buyer.headers), 403, "forbidden"
    )
    assert snapshot(platform, "notification") == before
    # An admin may tell users too.
    response = api.post(NOTIFY_USERS, json={"items": [good]}, headers=admin_headers(platform))
    assert response.status_code == 202, response.text
    assert response.json() == {"created": 3, "alreadySent": 0, "unknownUsers": 0}


# --- auth-service: contacts of many users at once -------------------------------------------


async def test_lookup_users_gives_known_users_contacts(platform: Platform) -> None:
    with_phone, without_phone = _register(platform), _register(platform, phone=False)
    nobody = uuid.uuid4()
    http = new_http_client(5.0)
    try:
        tokens = platform.service_token_source(http, "notification")
        client = AuthClient(platform.url("auth"), http, tokens)
        contacts = await client.lookup_users(
            [uuid.UUID(with_phone.id), nobody, uuid.UUID(without_phone.id), nobody]
        )
    finally:
        await http.aclose()
    by_id = {str(contact.id): contact for contact in contacts}
    assert sorted(by_id) == sorted([with_phone.id, without_phone.id])
    for buyer in (with_phone, without_phone):
        contact = by_id[buyer.id]
        assert (contact.email, contact.name, contact.phone) == (
            buyer.email,
            buyer.name,
            buyer.phone,
        )


def test_lookup_users_is_for_services_and_admins_and_bounded(platform: Platform) -> None:
    buyer = _register(platform)
    api = platform.client("auth")
    body = {"ids": [buyer.id]}
    assert_problem(api.post(LOOKUP, json=body), 401, "unauthorized")
    assert_problem(api.post(LOOKUP, json=body, headers=buyer.headers), 403, "forbidden")
    # Notification-service addresses messages; another service is refused.
    assert_problem(api.post(LOOKUP, json=body, headers=_service_headers(platform)), 403)
    for headers in (admin_headers(platform), platform.service_headers("notification")):
        [contact] = ok(api.post(LOOKUP, json=body, headers=headers))
        assert contact == {
            "id": buyer.id,
            "email": buyer.email,
            "name": buyer.name,
            "phone": buyer.phone,
        }
    assert (
        ok(api.post(LOOKUP, json={"ids": [str(uuid.uuid4())]}, headers=admin_headers(platform)))
        == []
    )
    too_many = {"ids": [str(uuid.uuid4()) for _ in range(2001)]}
    for bad in ({"ids": []}, {"ids": ["not-a-uuid"]}, too_many, {}):
        assert_problem(api.post(LOOKUP, json=bad, headers=admin_headers(platform)), 422)
