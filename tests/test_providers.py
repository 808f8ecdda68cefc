"""Provider clients against their sandboxes, which speak the providers' own wire contracts."""

import uuid
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from laku.core.settings import Settings
from laku.providers.smtp.client import EmailDeliveryError, SmtpClient
from laku.providers.whatsapp.client import WhatsAppClient, WhatsAppError
from laku.testing.platform import Platform
from tests.messages import emails_to, new_phone, whatsapp_messages_to


def _whatsapp(platform: Platform, http: httpx.AsyncClient, **settings: Any) -> WhatsAppClient:
    return WhatsAppClient.from_settings(platform.settings.model_copy(update=settings), http)


def _messages_url(platform: Platform) -> str:
    settings = platform.settings
    return (
        f"{platform.url('whatsapp-sandbox')}/{settings.whatsapp_api_version}"
        f"/{settings.whatsapp_phone_number_id}/messages"
    )


async def test_whatsapp_text_arrives_exactly_as_sent(platform: Platform) -> None:
    to = new_phone()
    body = "  Halo Pabrik Sinar 👋\nPO-2026-0001: 4 bundel kaos, total Rp 1.250.000.\n"
    async with httpx.AsyncClient() as http:
        message_id = await _whatsapp(platform, http).send_text(to, body)

    assert message_id.startswith("wamid.")
    [received] = whatsapp_messages_to(platform, to)
    assert received["id"] == message_id
    assert received["type"] == "text"
    assert received["text"] == body
    assert received["template"] is None
    assert received["receivedAt"]


async def test_whatsapp_template_arrives_with_its_parameters_in_order(platform: Platform) -> None:
    to = new_phone()
    async with httpx.AsyncClient() as http:
        message_id = await _whatsapp(platform, http).send_template(
            to, "purchase_order_created", "id", ["PO-2026-0002", "Kaos Polos", "12"]
        )

    [received] = whatsapp_messages_to(platform, to)
    assert received["id"] == message_id
    assert received["type"] == "template"
    assert received["text"] is None
    assert received["template"] == {
        "name": "purchase_order_created",
        "language": {"code": "id", "policy": "deterministic"},
        "components": [
            {
                "type": "body",
                "parameters": [
                    {"type": "text", "text": "PO-2026-0002"},
                    {"type": "text", "text": "Kaos Polos"},
                    {"type": "text", "text": "12"},
                ],
            }
        ],
    }


async def test_whatsapp_refusals_raise_with_the_graph_error(platform: Platform) -> None:
    to = new_phone()
    async with httpx.AsyncClient() as http:
        wrong = _whatsapp(platform, http, whatsapp_access_token=SecretStr("not-the-token"))
        with pytest.raises(WhatsAppError) as wrong_token:
            await wrong.send_text(to, "hi")
        with pytest.raises(WhatsAppError) as unknown_number:
            await _whatsapp(platform, http, whatsapp_phone_number_id="999").send_text(to, "hi")

    assert (wrong_token.value.status, wrong_token.value.code) == (401, 190)
    assert wrong_token.value.error_type == "OAuthException"
    assert "Invalid OAuth access token" in str(wrong_token.value)
    assert (unknown_number.value.status, unknown_number.value.code) == (400, 100)
    assert whatsapp_messages_to(platform, to) == []


async def test_whatsapp_unreachable_raises(platform: Platform) -> None:
    async with httpx.AsyncClient() as http:
        client = _whatsapp(platform, http, whatsapp_api_base_url="http://127.0.0.1:9")
        with pytest.raises(WhatsAppError, match="unreachable") as unreachable:
            await client.send_text(new_phone(), "hi")
    assert unreachable.value.status is None


@pytest.mark.parametrize(
    "message",
    [
        {"recipient_type": "individual", "to": "6281234567890", "type": "text"},  # no product
        {"messaging_product": "whatsapp", "to": "6281234567890", "type": "text"},  # no text
        {"messaging_product": "whatsapp", "to": "not-a-number", "text": {"body": "hi"}},
        {"messaging_product": "whatsapp", "to": "6281234567890", "text": {"body": "x" * 4097}},
        {"messaging_product": "whatsapp", "to": "6281234567890", "type": "template"},
    ],
)
def test_whatsapp_sandbox_refuses_malformed_messages_like_the_api(
    platform: Platform, message: dict[str, Any]
) -> None:
    token = platform.settings.whatsapp_access_token.get_secret_value()
    response = httpx.post(
        _messages_url(platform), json=message, headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["type"]) == (100, "OAuthException")
    assert error["message"] and error["fbtrace_id"]


def test_whatsapp_sandbox_can_be_cleared(platform: Platform) -> None:
    sandbox = platform.client("whatsapp-sandbox")
    token = platform.settings.whatsapp_access_token.get_secret_value()
    to = new_phone()
    message = {"messaging_product": "whatsapp", "to": to, "type": "text", "text": {"body": "x"}}
    accepted = httpx.post(
        _messages_url(platform), json=message, headers={"Authorization": f"Bearer {token}"}
    )
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["contacts"] == [{"input": to, "wa_id": to.lstrip("+")}]
    assert len(whatsapp_messages_to(platform, to)) == 1

    assert sandbox.delete("/sandbox/messages").status_code == 204
    assert whatsapp_messages_to(platform, to) == []


async def test_email_arrives_in_the_smtp_sink(platform: Platform) -> None:
    to = f"siti-{uuid.uuid4().hex[:8]}@laku.id"
    body = "Halo Siti,\n\nPesanan Anda sudah dikirim — terima kasih.\n"
    message_id = await SmtpClient.from_settings(platform.settings).send_email(
        to, "Pesanan dikirim", body
    )

    [received] = emails_to(platform, to)
    assert received["from"] == "no-reply@laku.id"
    assert received["to"] == [to]
    assert received["subject"] == "Pesanan dikirim"
    assert received["body"] == body
    assert received["messageId"] == message_id
    assert message_id.endswith("@laku.id>")

    assert platform.client("smtp-sandbox").delete("/sandbox/emails").status_code == 204
    assert emails_to(platform, to) == []


async def test_email_to_an_unreachable_server_raises() -> None:
    client = SmtpClient.from_settings(Settings(smtp_host="127.0.0.1", smtp_port=9))
    with pytest.raises(EmailDeliveryError, match=r"127\.0\.0\.1:9"):
        await client.send_email("siti@laku.id", "Halo", "Halo")
