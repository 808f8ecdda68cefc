"""WhatsApp Business Cloud API client: text and template messages from our business number.

`POST {base}/{version}/{phone-number-id}/messages` with a bearer token, as in Meta's reference;
the answer names the message (`{"messages": [{"id": "wamid..."}]}`), a refusal is a Graph API
error (`{"error": {"message", "type", "code"}}`).
"""

from collections.abc import Sequence
from typing import Annotated, Any

import httpx
from pydantic import BaseModel, Field

from laku.core.settings import Settings
from laku.providers.http import ProviderApi, ProviderError, api_base_url, refusal


class WhatsAppError(ProviderError):
    """The API refused the message (`status` and Graph `code` set) or could not be reached
    (`status` None). Either way the message was not sent."""

    provider = "WhatsApp API"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: int | None = None,
        error_type: str | None = None,
    ):
        super().__init__(message, status=status)
        self.code = code
        self.error_type = error_type


class _SentMessage(BaseModel):
    id: str


class _Sent(BaseModel):
    """The answer to a message: `{"messages": [{"id": "wamid..."}]}`."""

    messages: Annotated[list[_SentMessage], Field(min_length=1)]


class WhatsAppClient:
    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        base_url: str,
        api_version: str,
        phone_number_id: str,
        access_token: str,
    ):
        self._api = ProviderApi(
            http,
            f"{base_url.rstrip('/')}/{api_version}/{phone_number_id}",
            error=WhatsAppError,
            refusal=_api_error,
            headers={"Authorization": f"Bearer {access_token}"},
        )

    @classmethod
    def from_settings(cls, settings: Settings, http: httpx.AsyncClient) -> "WhatsAppClient":
        """The real API when `whatsapp_api_base_url` is set, else the local sandbox."""
        return cls(
            http,
            base_url=api_base_url(settings.whatsapp_api_base_url, "whatsapp-sandbox", settings),
            api_version=settings.whatsapp_api_version,
            phone_number_id=settings.whatsapp_phone_number_id,
            access_token=settings.whatsapp_access_token.get_secret_value(),
        )

    async def send_text(self, to: str, body: str) -> str:
        """Send a free-form text (allowed within 24 hours of the recipient's last message);
        returns the message id."""
        return await self._send(to, {"type": "text", "text": {"body": body}})

    async def send_template(
        self, to: str, name: str, language: str, body_params: Sequence[str] = ()
    ) -> str:
        """Send an approved template, filling its body's {{1}}, {{2}}... in order; returns the
        message id. Templates may start a conversation, so business notices use them."""
        template: dict[str, Any] = {"name": name, "language": {"code": language}}
        if body_params:
            template["components"] = [
                {
                    "type": "body",
                    "parameters": [{"type": "text", "text": value} for value in body_params],
                }
            ]
        return await self._send(to, {"type": "template", "template": template})

    async def _send(self, to: str, content: dict[str, Any]) -> str:
        message = {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": to,
            **content,
        }
        sent = await self._api.read("POST", "/messages", _Sent, "message id", json=message)
        return sent.messages[0].id


def _api_error(response: httpx.Response) -> WhatsAppError:
    """A Graph API error: `{"error": {"message", "type", "code"}}`."""
    return refusal(response, WhatsAppError, _graph_error)


def _graph_error(body: Any) -> tuple[str, dict[str, Any]]:
    error = body["error"]
    return error["message"], {"code": error.get("code"), "error_type": error.get("type")}
