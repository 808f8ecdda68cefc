"""WhatsApp Business Cloud API sandbox: accepts messages as the real API does, delivers nothing.

It checks what the real API checks before accepting a message (the bearer token, our phone
number id, the message's shape) and answers with the same success and Graph error bodies.
What it accepted is listed at `GET /sandbox/messages` (kept in memory, lost on restart).
"""

import secrets
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Request, Response, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from laku.core.sandbox import create_sandbox_app
from laku.core.schemas import WireModel
from laku.core.settings import get_settings

# The real API's limits.
_TEXT_MAX = 4096
_PHONE = r"^\+?[0-9]{8,15}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TextContent(_Strict):
    body: Annotated[str, Field(min_length=1, max_length=_TEXT_MAX)]
    preview_url: bool = False


class TextParameter(_Strict):
    type: Literal["text"]
    text: Annotated[str, Field(min_length=1)]


class TemplateComponent(_Strict):
    type: Literal["header", "body", "button"]
    parameters: list[TextParameter] = Field(default_factory=list)


class TemplateLanguage(_Strict):
    code: Annotated[str, Field(min_length=2, max_length=15)]
    policy: Literal["deterministic"] = "deterministic"


class TemplateContent(_Strict):
    name: Annotated[str, Field(min_length=1, max_length=512)]
    language: TemplateLanguage
    components: list[TemplateComponent] = Field(default_factory=list)


class OutgoingMessage(_Strict):
    """The `messages` request body, restricted to the two types Laku sends."""

    messaging_product: Literal["whatsapp"]
    recipient_type: Literal["individual"] = "individual"
    to: Annotated[str, Field(pattern=_PHONE)]
    type: Literal["text", "template"] = "text"
    text: TextContent | None = None
    template: TemplateContent | None = None

    @model_validator(mode="after")
    def _content_matches_type(self) -> "OutgoingMessage":
        if getattr(self, self.type) is None:
            raise ValueError(f"The parameter {self.type} is required for type {self.type}")
        return self


class ReceivedMessage(WireModel):
    model_config = ConfigDict(str_strip_whitespace=False)  # show the message exactly as received

    id: str
    to: str
    type: str
    text: str | None
    template: TemplateContent | None
    received_at: datetime


def _graph_error(
    http_status: int, code: int, error_type: str, message: str, details: str | None = None
) -> JSONResponse:
    error: dict[str, Any] = {
        "message": message,
        "type": error_type,
        "code": code,
        "fbtrace_id": secrets.token_urlsafe(12),
    }
    if details is not None:
        error["error_data"] = {"messaging_product": "whatsapp", "details": details}
    return JSONResponse({"error": error}, status_code=http_status)


def _invalid_parameter(details: str) -> JSONResponse:
    return _graph_error(400, 100, "OAuthException", "(#100) Invalid parameter", details)


def create_app() -> FastAPI:
    settings = get_settings()
    expected_authorization = f"Bearer {settings.whatsapp_access_token.get_secret_value()}"
    received: list[ReceivedMessage] = []
    app = create_sandbox_app("whatsapp")

    @app.post("/{api_version}/{phone_number_id}/messages", tags=["cloud-api"])
    async def send_message(api_version: str, phone_number_id: str, request: Request) -> Response:
        if request.headers.get("authorization") != expected_authorization:
            return _graph_error(
                401,
                190,
                "OAuthException",
                "Invalid OAuth access token - Cannot parse access token",
            )
        if phone_number_id != settings.whatsapp_phone_number_id:
            return _graph_error(
                400,
                100,
                "GraphMethodException",
                f"Unsupported post request. Object with ID '{phone_number_id}' does not exist, "
                "cannot be loaded due to missing permissions, or does not support this operation.",
            )
        try:
            message = OutgoingMessage.model_validate(await request.json())
        except ValidationError as exc:
            return _invalid_parameter(
                "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            )
        except ValueError:
            return _invalid_parameter("The request body is not valid JSON")

        message_id = f"wamid.{secrets.token_urlsafe(32)}"
        received.append(
            ReceivedMessage(
                id=message_id,
                to=message.to,
                type=message.type,
                text=message.text.body if message.text else None,
                template=message.template,
                received_at=datetime.now(UTC),
            )
        )
        answer: dict[str, Any] = {"id": message_id}
        if message.type == "template":
            answer["message_status"] = "accepted"
        return JSONResponse(
            {
                "messaging_product": "whatsapp",
                "contacts": [{"input": message.to, "wa_id": message.to.lstrip("+")}],
                "messages": [answer],
            }
        )

    @app.get("/sandbox/messages", response_model=list[ReceivedMessage], tags=["sandbox"])
    async def list_messages() -> list[ReceivedMessage]:
        """Every message accepted since start (or the last clear), oldest first."""
        return received

    @app.delete(
        "/sandbox/messages", status_code=status.HTTP_204_NO_CONTENT, response_class=Response
    )
    async def clear_messages() -> None:
        received.clear()

    return app
