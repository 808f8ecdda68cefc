"""A local SMTP sink: accepts every mail on 127.0.0.1:(2525 + port offset) and keeps it in
memory, listed at `GET /sandbox/emails` (lost on restart). Nothing is relayed anywhere."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage

from aiosmtpd.smtp import SMTP, Envelope, Session
from fastapi import FastAPI, Response, status
from pydantic import ConfigDict, Field

from laku.core.sandbox import create_sandbox_app
from laku.core.schemas import WireModel
from laku.core.settings import get_settings
from laku.providers.smtp.client import sandbox_smtp_port


class ReceivedEmail(WireModel):
    model_config = ConfigDict(str_strip_whitespace=False)  # show the mail exactly as received

    sender: str = Field(alias="from")  # the envelope sender (MAIL FROM)
    to: list[str]  # the envelope recipients (RCPT TO)
    subject: str
    body: str
    message_id: str | None
    received_at: datetime


class _Sink:
    """aiosmtpd handler: parses each mail and keeps it."""

    def __init__(self) -> None:
        self.received: list[ReceivedEmail] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        mail = message_from_bytes(envelope.original_content or b"", policy=policy.default)
        assert isinstance(mail, EmailMessage)  # what policy.default parses into
        text_part = mail.get_body(preferencelist=("plain",))
        # Lines travel with CRLF (RFC 5322); show them as the sender's text has them.
        body = text_part.get_content().replace("\r\n", "\n") if text_part else ""
        self.received.append(
            ReceivedEmail(
                sender=envelope.mail_from or "",
                to=list(envelope.rcpt_tos),
                subject=str(mail.get("Subject", "")),
                body=body,
                message_id=mail.get("Message-ID"),
                received_at=datetime.now(UTC),
            )
        )
        return "250 Message accepted for delivery"


def create_app() -> FastAPI:
    settings = get_settings()
    sink = _Sink()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        server = await asyncio.get_running_loop().create_server(
            lambda: SMTP(sink, hostname="laku-smtp-sandbox"),
            host=settings.host,
            port=sandbox_smtp_port(settings),
        )
        try:
            yield
        finally:
            server.close()
            await server.wait_closed()

    app = create_sandbox_app("smtp", lifespan=lifespan)

    @app.get("/sandbox/emails", response_model=list[ReceivedEmail], tags=["sandbox"])
    async def list_emails() -> list[ReceivedEmail]:
        """Every mail received since start (or the last clear), oldest first."""
        return sink.received

    @app.delete("/sandbox/emails", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
    async def clear_emails() -> None:
        sink.received.clear()

    return app
