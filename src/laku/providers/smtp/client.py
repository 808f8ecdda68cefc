"""Sending e-mail over SMTP (aiosmtplib): plain-text mails from `mail_from`."""

import socket
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr

import aiosmtplib

from laku.core.settings import Settings

# Where the smtp-sandbox's sink listens (plus the port offset) when no SMTP port is configured.
SANDBOX_SMTP_PORT = 2525


def sandbox_smtp_port(settings: Settings) -> int:
    return SANDBOX_SMTP_PORT + settings.port_offset


class EmailDeliveryError(Exception):
    """The SMTP server was unreachable or refused the mail; it was not sent."""


@dataclass(frozen=True, kw_only=True)
class SmtpClient:
    host: str
    port: int
    sender: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    starttls: bool = False
    timeout_seconds: float = 10.0
    # The name this client greets the server with (EHLO), looked up once: aiosmtplib would
    # otherwise resolve it again in a thread for every mail.
    local_hostname: str = field(default_factory=socket.getfqdn)

    @classmethod
    def from_settings(cls, settings: Settings) -> "SmtpClient":
        """The configured relay, else the local smtp-sandbox."""
        password = settings.smtp_password
        return cls(
            host=settings.smtp_host or settings.host,
            port=settings.smtp_port or sandbox_smtp_port(settings),
            sender=settings.mail_from,
            username=settings.smtp_username,
            password=password.get_secret_value() if password else None,
            starttls=settings.smtp_starttls,
            timeout_seconds=settings.http_timeout_seconds,
        )

    async def send_email(self, to: str, subject: str, body: str) -> str:
        """Send a plain-text mail; returns its Message-ID."""
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = to
        message["Subject"] = subject
        message["Date"] = formatdate(localtime=False)
        # Message-IDs name our own domain, as RFC 5322 recommends.
        message["Message-ID"] = make_msgid(
            domain=parseaddr(self.sender)[1].rpartition("@")[2] or None
        )
        message.set_content(body)
        try:
            await aiosmtplib.send(
                message,
                hostname=self.host,
                port=self.port,
                username=self.username,
                password=self.password,
                start_tls=self.starttls,
                timeout=self.timeout_seconds,
                local_hostname=self.local_hostname,
            )
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise EmailDeliveryError(
                f"SMTP {self.host}:{self.port} did not take the mail: {exc!r}"
            ) from exc
        return message["Message-ID"]
