"""WhatsApp Business Cloud API client: text and template messages from our business number.

`POST {base}/{version}/{phone-number-id}/messages` with a bearer token, as in Meta's reference;
the answer names the message (`{"messages": [{"id": "wamid..."}]}`), a refusal is a Graph API
error (`{"error": {"message", "type", "code"}}`).
"""

from collections.abc import Sequence
from typing import Any

import httpx

from laku.core.services import service_url
from laku.core.settings import Settings


class WhatsAppError(Exception):
    """The API refused the message (`status` and Graph `code` set) or could not be reached
    (`status` None). Either way the message was not sent."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: int | None = None,
        error_type: str | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.code = code
        self.error_type = error_type


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
        self._http = http
        self._messages_url = f"{base_url.rstrip('/')}/{api_version}/{phone_number_id}/messages"
        self._headers = {"Authorization": f"Bearer {access_token}"}

    @classmethod
    def from_settings(cls, settings: Settings, http: httpx.AsyncClient) -> "WhatsAppClient":
        """The real API when `whatsapp_api_base_url` is set, else the local sandbox."""
        return cls(
            http,
            base_url=settings.whatsapp_api_base_url or service_url("whatsapp-sandbox", settings),
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
        try:
            response = await self._http.post(
                self._messages_url, json=message, headers=self._headers
            )
        except httpx.HTTPError as exc:
            raise WhatsAppError(f"WhatsApp API unreachable: {exc!r}") from exc
        if not response.is_success:
            raise _api_error(response)
        try:
            return response.json()["messages"][0]["id"]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise WhatsAppError(
                f"WhatsApp API answered {response.status_code} without a message id",
                status=response.status_code,
            ) from exc


def _api_error(response: httpx.Response) -> WhatsAppError:
    try:
        error = response.json()["error"]
        return WhatsAppError(
            f"WhatsApp API refused the message ({response.status_code}): {error['message']}",
            status=response.status_code,
            code=error.get("code"),
            error_type=error.get("type"),
        )
    except (ValueError, KeyError, TypeError):
        return WhatsAppError(
            f"WhatsApp API answered {response.status_code}: {response.text[:200]}",
            status=response.status_code,
        )
