"""notification-service over HTTP: WhatsApp and e-mail delivered through the providers'
sandboxes by the outbox relay, in-app inboxes, access rules, and delivery through an outage."""

import uuid
from typing import Any, TypeVar

import pytest

from laku.core.http import new_http_client
from laku.notification.client import (
    Channel,
    NotificationClient,
    NotificationRequest,
    NotificationStatus,
    TemplateMessage,
)
from laku.testing.platform import Platform
from tests.messages import emails_to, new_phone, whatsapp_messages_to
from tests.support import admin_headers, assert_problem, eventually, snapshot

NOTIFICATIONS = "/api/notifications"
T = TypeVar("T")


def _service_headers(platform: Platform) -> dict[str, str]:
    return platform.service_headers("warehouse")


def _send(platform: Platform, body: dict[str, Any], **headers: str) -> dict[str, Any]:
    response = platform.client("notification").post(
        NOTIFICATIONS, json=body, headers={**admin_headers(platform), **headers}
    )
    assert response.status_code == 202, response.text
    return response.json()


def _get(platform: Platform, notification_id: str) -> dict[str, Any]:
    response = platform.client("notification").get(
        f"{NOTIFICATIONS}/{notification_id}", headers=admin_headers(platform)
    )
    assert response.status_code == 200, response.text
    return response.json()


def _when_sent(platform: Platform, notification_id: str, timeout_seconds: float = 5.0) -> dict:
    def sent() -> dict[str, Any] | None:
        notification = _get(platform, notification_id)
        return notification if notification["status"] == "sent" else None

    return eventually(sent, timeout_seconds)


def _settled_snapshot(platform: Platform) -> dict[str, dict[str, str]]:
    """The schema once no delivery is changing it (two equal reads in a row)."""
    previous = snapshot(platform, "notification")
    while (current := snapshot(platform, "notification")) != previous:
        previous = current
    return current


def test_whatsapp_text_is_delivered_with_exactly_the_text_sent(platform: Platform) -> None:
    to = new_phone()
    text = "Halo Pabrik Sinar, PO-2026-0001 menunggu konfirmasi: 4 bundel, Rp 1.250.000."
    created = _send(platform, {"channel": "whatsapp", "to": to, "text": text})
    assert created["channel"] == "whatsapp"
    assert (created["to"], created["text"], created["template"]) == (to, text, None)
    assert created["status"] in ("pending", "sent")  # delivery runs in the background

    sent = _when_sent(platform, created["id"])
    [message] = whatsapp_messages_to(platform, to)
    assert (message["type"], message["text"]) == ("text", text)
    assert sent["providerMessageId"] == message["id"]
    assert sent["attempts"] == 1
    assert sent["lastError"] is None
    assert sent["sentAt"] >= sent["createdAt"]


@pytest.mark.parametrize("written", ["0{}", "62{}", "+62{}"])
def test_whatsapp_numbers_are_stored_and_sent_with_their_country_code(
    platform: Platform, written: str
) -> None:
    subscriber = new_phone().removeprefix("+62")
    to = written.format(subscriber)
    created = _send(platform, {"channel": "whatsapp", "to": to, "text": "Hai"})
    assert created["to"] == f"+62{subscriber}"
    _when_sent(platform, created["id"])
    assert len(whatsapp_messages_to(platform, f"+62{subscriber}")) == 1


def test_whatsapp_template_is_delivered_with_its_parameters(platform: Platform) -> None:
    to = new_phone()
    created = _send(
        platform,
        {
            "channel": "whatsapp",
            "to": to,
            "text": "PO-2026-0002 untuk Kaos Polos: 12 bundel.",
            "template": {
                "name": "purchase_order_created",
                "language": "id",
                "params": ["PO-2026-0002", "Kaos Polos", "12"],
            },
        },
        **_service_headers(platform),
    )
    assert created["template"]["params"] == ["PO-2026-0002", "Kaos Polos", "12"]

    sent = _when_sent(platform, created["id"])
    [message] = whatsapp_messages_to(platform, to)
    assert sent["providerMessageId"] == message["id"]
    assert message["type"] == "template"
    assert message["template"]["name"] == "purchase_order_created"
    assert message["template"]["language"]["code"] == "id"
    [body] = message["template"]["components"]
    assert [p["text"] for p in body["parameters"]] == ["PO-2026-0002", "Kaos Polos", "12"]


def test_email_is_delivered_to_the_smtp_sink(platform: Platform) -> None:
    to = f"siti-{uuid.uuid4().hex[:8]}@laku.id"
    text = "Halo Siti,\n\nPembayaran Anda untuk sesi Kaos Polos sudah kami terima."
    created = _send(
        platform, {"channel": "email", "to": to, "subject": "Pembayaran diterima", "text": text}
    )

    sent = _when_sent(platform, created["id"])
    [mail] = emails_to(platform, to)
    assert mail["subject"] == "Pembayaran diterima"
    assert mail["body"] == text + "\n"  # a MIME text body ends with a line break
    assert mail["from"] == "no-reply@laku.id"
    assert sent["providerMessageId"] == mail["messageId"]


def test_in_app_inbox_is_the_owners_newest_first(platform: Platform) -> None:
    buyer, other = platform.new_buyer(), platform.new_buyer()
    api = platform.client("notification")
    first = _send(platform, {"channel": "in_app", "userId": buyer.id, "text": "Grup penuh!"})
    second = _send(
        platform,
        {"channel": "in_app", "userId": buyer.id, "subject": "Refund", "text": "Rp 5.000 masuk"},
    )
    assert first["status"] == "sent"  # stored is delivered
    assert first["sentAt"] is not None and first["readAt"] is None
    assert first["to"] is None

    inbox = api.get(f"{NOTIFICATIONS}/me", headers=buyer.headers).json()
    assert inbox["total"] == 2
    assert [n["id"] for n in inbox["items"]] == [second["id"], first["id"]]
    page = api.get(f"{NOTIFICATIONS}/me?limit=1&offset=1", headers=buyer.headers).json()
    assert (page["total"], page["limit"], page["offset"]) == (2, 1, 1)
    assert [n["id"] for n in page["items"]] == [first["id"]]
    assert api.get(f"{NOTIFICATIONS}/me", headers=other.headers).json()["items"] == []

    # Another user can neither see nor mark it: it does not exist for them.
    assert_problem(
        api.get(f"{NOTIFICATIONS}/{first['id']}", headers=other.headers),
        404,
        "notification_not_found",
    )
    assert_problem(
        api.post(f"{NOTIFICATIONS}/{first['id']}/read", headers=other.headers),
        404,
        "notification_not_found",
    )
    assert api.get(f"{NOTIFICATIONS}/{first['id']}", headers=buyer.headers).status_code == 200

    read = api.post(f"{NOTIFICATIONS}/{first['id']}/read", headers=buyer.headers)
    assert read.status_code == 200, read.text
    assert read.json()["readAt"] is not None
    again = api.post(f"{NOTIFICATIONS}/{first['id']}/read", headers=buyer.headers).json()
    assert again["readAt"] == read.json()["readAt"]  # the first reading counts
    inbox = api.get(f"{NOTIFICATIONS}/me", headers=buyer.headers).json()
    assert [n["readAt"] is not None for n in inbox["items"]] == [False, True]


def test_a_whatsapp_notification_is_not_read_in_the_app(platform: Platform) -> None:
    buyer = platform.new_buyer()
    created = _send(
        platform, {"channel": "whatsapp", "userId": buyer.id, "to": new_phone(), "text": "Hai"}
    )
    api = platform.client("notification")
    assert api.get(f"{NOTIFICATIONS}/{created['id']}", headers=buyer.headers).status_code == 200
    assert_problem(
        api.post(f"{NOTIFICATIONS}/{created['id']}/read", headers=buyer.headers),
        409,
        "not_an_in_app_notification",
    )


def test_only_admins_and_services_send_and_only_admins_list_all(platform: Platform) -> None:
    api = platform.client("notification")
    buyer = platform.new_buyer()
    body = {"channel": "in_app", "userId": buyer.id, "text": "Hai"}
    assert_problem(api.post(NOTIFICATIONS, json=body), 401, "unauthorized")
    assert_problem(api.post(NOTIFICATIONS, json=body, headers=buyer.headers), 403, "forbidden")
    assert_problem(api.get(NOTIFICATIONS, headers=buyer.headers), 403, "forbidden")
    assert_problem(api.get(NOTIFICATIONS, headers=_service_headers(platform)), 403)
    assert_problem(api.get(f"{NOTIFICATIONS}/me"), 401, "unauthorized")
    assert_problem(api.get(f"{NOTIFICATIONS}/me", headers=_service_headers(platform)), 403)
    assert api.get(f"{NOTIFICATIONS}/me", headers=buyer.headers).json()["total"] == 0


@pytest.mark.parametrize(
    "body",
    [
        {"channel": "whatsapp", "text": "no number"},
        {"channel": "whatsapp", "to": "0812345", "text": "too short"},
        {"channel": "whatsapp", "to": "+62 812-3456-7890", "text": "formatted"},
        {"channel": "whatsapp", "to": "+0812345678", "text": "no country code"},
        {"channel": "whatsapp", "to": "+6281234567890", "subject": "Hai", "text": "subject"},
        {"channel": "email", "to": "not-an-address", "subject": "Hai", "text": "Hai"},
        {"channel": "email", "to": "siti@laku.id", "text": "no subject"},
        {"channel": "in_app", "text": "nobody"},
        {"channel": "in_app", "userId": str(uuid.uuid4()), "to": "+6281234567890", "text": "x"},
        {"channel": "sms", "to": "+6281234567890", "text": "unknown channel"},
        {"channel": "whatsapp", "to": "+6281234567890", "text": ""},
        {"channel": "whatsapp", "to": "+6281234567890", "text": "x" * 4097},
        {"channel": "whatsapp", "to": "+6281234567890", "text": "x", "priority": "high"},
        {
            "channel": "email",
            "to": "siti@laku.id",
            "subject": "Hai",
            "text": "Hai",
            "template": {"name": "welcome", "language": "id", "params": []},
        },
        {
            "channel": "whatsapp",
            "to": "+6281234567890",
            "text": "Hai",
            "template": {"name": "Not A Template Name", "language": "id"},
        },
    ],
)
def test_invalid_notifications_are_refused_and_change_nothing(
    platform: Platform, body: dict[str, Any]
) -> None:
    before = _settled_snapshot(platform)
    response = platform.client("notification").post(
        NOTIFICATIONS, json=body, headers=admin_headers(platform)
    )
    assert_problem(response, 422, "invalid_input")
    assert snapshot(platform, "notification") == before


def test_one_idempotency_key_sends_one_message(platform: Platform) -> None:
    to = new_phone()
    body = {"channel": "whatsapp", "to": to, "text": "PO-2026-0003 dibuat."}
    key = {"Idempotency-Key": f"po:{uuid.uuid4()}:created"}
    headers = {**_service_headers(platform), **key}
    api = platform.client("notification")
    first = api.post(NOTIFICATIONS, json=body, headers=headers)
    again = api.post(NOTIFICATIONS, json=body, headers=headers)
    assert first.status_code == again.status_code == 202
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]

    _when_sent(platform, first.json()["id"])
    assert len(whatsapp_messages_to(platform, to)) == 1
    listed = api.get(
        NOTIFICATIONS, params={"channel": "whatsapp", "limit": 100}, headers=admin_headers(platform)
    ).json()
    assert [n["id"] for n in listed["items"] if n["to"] == to] == [first.json()["id"]]


async def test_typed_client_sends_once_per_key(platform: Platform) -> None:
    to = new_phone()
    request = NotificationRequest(
        channel=Channel.WHATSAPP,
        to=to,
        text="PO-2026-0004: 3 bundel Kaos Polos.",
        template=TemplateMessage(
            name="purchase_order_created", language="id", params=["PO-2026-0004", "3"]
        ),
    )
    http = new_http_client(5.0)
    try:
        tokens = platform.service_token_source(http, "warehouse")
        client = NotificationClient(platform.url("notification"), http, tokens)
        key = f"po:{uuid.uuid4()}:created"
        sent = await client.send(request, idempotency_key=key)
        repeated = await client.send(request, idempotency_key=key)
    finally:
        await http.aclose()

    assert repeated.id == sent.id
    assert sent.channel is Channel.WHATSAPP
    assert sent.template == request.template
    delivered = _when_sent(platform, str(sent.id))
    assert delivered["status"] == NotificationStatus.SENT
    assert len(whatsapp_messages_to(platform, to)) == 1


def test_whatsapp_outage_delays_a_message_without_losing_or_repeating_it(
    platform: Platform,
) -> None:
    to = new_phone()
    api = platform.client("notification")
    platform.supervisor.stop("whatsapp-sandbox")
    try:
        created = _send(platform, {"channel": "whatsapp", "to": to, "text": "PO-2026-0005"})

        def failed_attempt() -> dict[str, Any] | None:
            notification = _get(platform, created["id"])
            return notification if notification["attempts"] > 0 else None

        pending = eventually(failed_attempt)
        assert pending["status"] == "pending"
        assert "unreachable" in pending["lastError"]
        listed = api.get(
            NOTIFICATIONS,
            params={"status": "pending", "channel": "whatsapp", "limit": 100},
            headers=admin_headers(platform),
        ).json()
        [shown] = [n for n in listed["items"] if n["id"] == created["id"]]
        assert shown["attempts"] >= 1 and shown["lastError"]
    finally:
        platform.supervisor.start_one("whatsapp-sandbox")
        platform.supervisor.wait_ready()

    sent = _when_sent(platform, created["id"], timeout_seconds=15)
    assert sent["attempts"] >= 2
    assert sent["lastError"] is None
    [message] = whatsapp_messages_to(platform, to)
    assert message["id"] == sent["providerMessageId"]
    assert message["text"] == "PO-2026-0005"


def test_admin_listing_filters_by_channel_and_status(platform: Platform) -> None:
    buyer = platform.new_buyer()
    in_app = _send(platform, {"channel": "in_app", "userId": buyer.id, "text": "Hai"})
    api = platform.client("notification")
    emails = api.get(
        NOTIFICATIONS, params={"channel": "email", "limit": 100}, headers=admin_headers(platform)
    ).json()
    assert emails["items"] and all(n["channel"] == "email" for n in emails["items"])
    sent_in_app = api.get(
        NOTIFICATIONS,
        params={"channel": "in_app", "status": "sent", "limit": 1},
        headers=admin_headers(platform),
    ).json()
    assert [n["id"] for n in sent_in_app["items"]] == [in_app["id"]]  # the newest
    assert_problem(
        api.get(NOTIFICATIONS, params={"status": "lost"}, headers=admin_headers(platform)), 422
    )


def test_unknown_notification_is_not_found(platform: Platform) -> None:
    response = platform.client("notification").get(
        f"{NOTIFICATIONS}/{uuid.uuid4()}", headers=admin_headers(platform)
    )
    assert_problem(response, 404, "notification_not_found")
