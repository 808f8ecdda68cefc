"""Sending e-mail over SMTP (aiosmtplib): plain-text mails from `mail_from`."""

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


class SmtpClient:
    def __init__(
        self,
        *,
        host: str,
        port: int,
        sender: str,
        username: str | None = None,
        password: str | None = None,
        starttls: bool = False,
        timeout_seconds: float = 10.0,
    ):
        self._host = host
        self._port = port
        self._sender = sender
        self._username = username
        self._password = password
        self._starttls = starttls
        self._timeout_seconds = timeout_seconds
        # Message-IDs name our own domain, as RFC 5322 recommends.
        self._message_id_domain = parseaddr(sender)[1].rpartition("@")[2] or None

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
        message["From"] = self._sender
        message["To"] = to
        message["Subject"] = subject
        message["Date"] = formatdate(localtime=False)
        message["Message-ID"] = make_msgid(domain=self._message_id_domain)
        message.set_content(body)
        try:
            await aiosmtplib.send(
                message,
                hostname=self._host,
                port=self._port,
                username=self._username,
                password=self._password,
                start_tls=self._starttls,
                timeout=self._timeout_seconds,
            )
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise EmailDeliveryError(
                f"SMTP {self._host}:{self._port} did not take the mail: {exc!r}"
            ) from exc
        return message["Message-ID"]
