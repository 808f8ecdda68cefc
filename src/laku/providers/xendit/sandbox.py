"""Xendit Invoice API sandbox: invoices as the real API keeps them, paid from a local checkout.

It speaks the Invoice API contract (`POST /v2/invoices`, `GET /v2/invoices/{id}`,
`GET /v2/invoices?external_id=`, `POST /invoices/{id}/expire!`, Basic auth with the secret key,
`{"error_code", "message"}` refusals) as Xendit's official SDK reads it, and, like Xendit,
reports every PAID and EXPIRED invoice by POSTing the invoice callback to our webhook URL with
the `x-callback-token` header. A failed delivery is retried with back-off
and then given up, as Xendit does, so the receiver must accept late and repeated callbacks.

Where Xendit's behaviour is not documented, the sandbox chooses: expiring an invoice that is
already EXPIRED answers it unchanged; expiring a PAID one is refused like an unknown invoice
(404 `INVOICE_NOT_FOUND_ERROR`: only pending invoices can be expired).

What a test needs beyond the API lives under `/sandbox`: pay or expire an invoice as a buyer or
the clock would, send an invoice's callback again or lose its callbacks from now on, and list
invoices and delivery attempts.
Everything is kept in memory and lost on restart.
"""

import asyncio
import base64
import binascii
import hmac
import secrets
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from html import escape
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from pydantic import AliasPath, BaseModel, ConfigDict, EmailStr, Field, HttpUrl, ValidationError

from laku.core.sandbox import WebhookAttempt, WebhookLog, WebhookSender, create_sandbox_app
from laku.core.services import service_url
from laku.core.settings import Settings, get_settings
from laku.providers.xendit.payout_sandbox import payout_router
from laku.providers.xendit.sandbox_api import XenditApiError, validation_error, xendit_time

MERCHANT_NAME = "Laku"
# Xendit retries a callback that was refused or not answered; the sandbox waits this long before
# each retry, then gives up (six attempts, about 15 s in all).
RETRY_DELAYS_SECONDS = (0.5, 1.0, 2.0, 4.0, 8.0)
# The real API's limits.
_MAX_INVOICE_DURATION_SECONDS = 31_536_000  # one year
_TEXT_MAX = 1000
# The bank transfer a sandbox payment pretends to have arrived through.
_PAID_THROUGH_BANK = "BCA"
_AVAILABLE_BANKS = ("BCA", "BNI", "BRI", "MANDIRI", "PERMATA")
# The other Indonesian channels a checkout offers, listed as Xendit lists them (Xendit's SDKs
# require every `available_*` list on an invoice, even where the sandbox only takes transfers).
_AVAILABLE_RETAIL_OUTLETS = ("ALFAMART", "INDOMARET")
_AVAILABLE_EWALLETS = ("OVO", "DANA", "SHOPEEPAY", "LINKAJA")
_AVAILABLE_QR_CODES = ("QRIS",)
_AVAILABLE_DIRECT_DEBITS = ("DD_BRI", "DD_MANDIRI")
_AVAILABLE_PAYLATERS = ("KREDIVO", "AKULAKU")


def _invoice_not_found(invoice_id: str) -> XenditApiError:
    return XenditApiError(404, "INVOICE_NOT_FOUND_ERROR", f"Could not find invoice {invoice_id}")


class CreateInvoiceRequest(BaseModel):
    """The `POST /v2/invoices` fields Laku sends; Xendit's other optional fields are ignored."""

    model_config = ConfigDict(extra="ignore")

    external_id: Annotated[str, Field(min_length=1, max_length=_TEXT_MAX)]
    amount: Annotated[int, Field(ge=1)]
    description: Annotated[str | None, Field(max_length=_TEXT_MAX)] = None
    payer_email: EmailStr | None = None
    invoice_duration: Annotated[int | None, Field(ge=1, le=_MAX_INVOICE_DURATION_SECONDS)] = None
    currency: str = "IDR"
    # Where the checkout sends the buyer once the invoice is paid, or has expired.
    success_redirect_url: HttpUrl | None = None
    failure_redirect_url: HttpUrl | None = None


@dataclass
class SandboxInvoice:
    id: str
    user_id: str
    request: CreateInvoiceRequest
    invoice_url: str
    created: datetime
    expiry_date: datetime
    status: str = "PENDING"
    updated: datetime = field(default_factory=lambda: datetime.now(UTC))
    paid_at: datetime | None = None
    payment_id: str | None = None
    payment_destination: str | None = None
    # Set under /sandbox: Xendit's callbacks for this invoice are lost (never delivered).
    callbacks_lost: bool = False

    @property
    def return_url(self) -> str | None:
        """Where the checkout sends the buyer now: back to the merchant once it is over."""
        if self.status in ("PAID", "SETTLED"):
            return _text(self.request.success_redirect_url)
        return _text(self.request.failure_redirect_url) if self.status == "EXPIRED" else None

    def _common(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "external_id": self.request.external_id,
            "user_id": self.user_id,
            "status": self.status,
            "merchant_name": MERCHANT_NAME,
            "amount": self.request.amount,
            "payer_email": self.request.payer_email,
            "description": self.request.description,
            "currency": "IDR",
            "created": xendit_time(self.created),
            "updated": xendit_time(self.updated),
        }

    def _payment(self) -> dict[str, Any]:
        if self.paid_at is None:
            return {}
        return {
            "paid_amount": self.request.amount,
            "paid_at": xendit_time(self.paid_at),
            "payment_method": "BANK_TRANSFER",
            "bank_code": _PAID_THROUGH_BANK,
            "payment_channel": _PAID_THROUGH_BANK,
            "payment_destination": self.payment_destination,
            "payment_id": self.payment_id,
        }

    def as_resource(self) -> dict[str, Any]:
        """The invoice as the API returns it."""
        return {
            **self._common(),
            "merchant_profile_picture_url": "",
            "expiry_date": xendit_time(self.expiry_date),
            "invoice_url": self.invoice_url,
            "available_banks": [
                {
                    "bank_code": bank,
                    "collection_type": "POOL",
                    "transfer_amount": self.request.amount,
                    "bank_branch": "Virtual Account",
                    "account_holder_name": MERCHANT_NAME.upper(),
                    "identity_amount": 0,
                }
                for bank in _AVAILABLE_BANKS
            ],
            "available_retail_outlets": [
                {"retail_outlet_name": outlet} for outlet in _AVAILABLE_RETAIL_OUTLETS
            ],
            "available_ewallets": [{"ewallet_type": ewallet} for ewallet in _AVAILABLE_EWALLETS],
            "available_qr_codes": [{"qr_code_type": qr_code} for qr_code in _AVAILABLE_QR_CODES],
            "available_direct_debits": [
                {"direct_debit_type": debit} for debit in _AVAILABLE_DIRECT_DEBITS
            ],
            "available_paylaters": [
                {"paylater_type": paylater} for paylater in _AVAILABLE_PAYLATERS
            ],
            "should_exclude_credit_card": False,
            "should_send_email": False,
            **{
                name: url
                for name, url in (
                    ("success_redirect_url", _text(self.request.success_redirect_url)),
                    ("failure_redirect_url", _text(self.request.failure_redirect_url)),
                )
                if url is not None
            },
            **self._payment(),
        }

    def as_callback(self) -> dict[str, Any]:
        """The invoice callback Xendit POSTs to the webhook URL when the invoice is paid or
        expires."""
        return {**self._common(), "is_high": False, **self._payment()}


class InvoiceWebhookAttempt(WebhookAttempt):
    invoice_id: str = Field(validation_alias=AliasPath("payload", "id"))
    external_id: str = Field(validation_alias=AliasPath("payload", "external_id"))
    status: str = Field(validation_alias=AliasPath("payload", "status"))


@dataclass
class XenditSandbox:
    settings: Settings
    # Where checkout links point; the sandbox's own address.
    public_url: str
    user_id: str = field(default_factory=lambda: secrets.token_hex(12))
    invoices: dict[str, SandboxInvoice] = field(default_factory=dict)
    # Sends the invoice webhooks and the payouts' (`payout_sandbox.py`).
    webhook_sender: WebhookSender = field(init=False)
    webhooks: WebhookLog[InvoiceWebhookAttempt] = field(init=False)

    def __post_init__(self) -> None:
        self.webhook_sender = WebhookSender(
            self.settings,
            headers=lambda: self.callback_headers,
            retry_delays_seconds=RETRY_DELAYS_SECONDS,
        )
        self.webhooks = WebhookLog(self.webhook_sender, InvoiceWebhookAttempt)

    @property
    def webhook_url(self) -> str:
        return (
            self.settings.xendit_webhook_url
            or f"{service_url('payment', self.settings)}/api/payments/webhook"
        )

    def authenticate(self, authorization: str | None) -> None:
        """Basic auth, the secret key as user name (the password is not checked, as Xendit's
        is empty)."""
        expected = self.settings.xendit_secret_key.get_secret_value()
        scheme, _, encoded = (authorization or "").partition(" ")
        try:
            username = base64.b64decode(encoded, validate=True).decode().partition(":")[0]
        except (binascii.Error, UnicodeDecodeError):
            username = ""
        if scheme.lower() != "basic" or not hmac.compare_digest(
            username.encode(), expected.encode()
        ):
            raise XenditApiError(401, "INVALID_API_KEY", "API key is not authorized")

    def find(self, invoice_id: str) -> SandboxInvoice:
        invoice = self.invoices.get(invoice_id)
        if invoice is None:
            raise _invoice_not_found(invoice_id)
        return invoice

    def create(self, request: CreateInvoiceRequest) -> SandboxInvoice:
        if request.currency != "IDR":
            raise XenditApiError(
                400, "UNSUPPORTED_CURRENCY", f"Currency {request.currency} is not supported"
            )
        duration = request.invoice_duration or self.settings.invoice_duration_seconds
        now = datetime.now(UTC)
        invoice_id = secrets.token_hex(12)  # Xendit's ids are 24 hex digits
        invoice = SandboxInvoice(
            id=invoice_id,
            user_id=self.user_id,
            request=request,
            invoice_url=f"{self.public_url}/checkout/{invoice_id}",
            created=now,
            updated=now,
            expiry_date=now + timedelta(seconds=duration),
        )
        self.invoices[invoice_id] = invoice
        # Like Xendit, an unpaid invoice expires on its own at its expiry date.
        asyncio.get_running_loop().call_later(duration, self._expire_when_due, invoice_id)
        return invoice

    def _expire_when_due(self, invoice_id: str) -> None:
        invoice = self.invoices.get(invoice_id)
        if invoice is not None and invoice.status == "PENDING":
            self.expire(invoice)

    def pay(self, invoice: SandboxInvoice) -> None:
        """The buyer pays: PAID and its callback. Paying a paid invoice changes nothing."""
        if invoice.status == "EXPIRED":
            raise XenditApiError(
                409, "INVOICE_EXPIRED", f"Invoice {invoice.id} has expired and cannot be paid"
            )
        if invoice.status != "PENDING":
            return
        invoice.status = "PAID"
        invoice.paid_at = invoice.updated = datetime.now(UTC)
        invoice.payment_id = secrets.token_hex(12)
        invoice.payment_destination = f"{secrets.randbelow(10**12):012d}"
        self.send_callback(invoice)

    def expire(self, invoice: SandboxInvoice) -> None:
        """No payment is accepted after this: EXPIRED and its callback, once."""
        if invoice.status == "EXPIRED":
            return
        if invoice.status != "PENDING":
            raise _invoice_not_found(invoice.id)
        invoice.status = "EXPIRED"
        invoice.updated = datetime.now(UTC)
        self.send_callback(invoice)

    def send_callback(self, invoice: SandboxInvoice) -> None:
        """Deliver the invoice's current state after the caller has been answered."""
        if invoice.status not in ("PAID", "EXPIRED"):
            raise XenditApiError(
                409,
                "INVOICE_STATUS_HAS_NO_CALLBACK",
                f"Invoice {invoice.id} is {invoice.status}; callbacks report PAID or EXPIRED",
            )
        if invoice.callbacks_lost:
            return
        # The payload is what happened now, even if the invoice moves on while retrying.
        self.webhooks.send(self.webhook_url, invoice.as_callback())

    @property
    def callback_headers(self) -> dict[str, str]:
        return {"x-callback-token": self.settings.xendit_callback_token.get_secret_value()}


def _text(url: HttpUrl | None) -> str | None:
    return None if url is None else str(url)


def _rupiah(amount: int) -> str:
    return "Rp " + f"{amount:,}".replace(",", ".")


def _checkout_page(invoice: SandboxInvoice) -> str:
    pay_form = (
        f'<form method="post" action="/sandbox/invoices/{invoice.id}/pay">'
        '<button type="submit">Pay</button></form>'
        if invoice.status == "PENDING"
        else ""
    )
    request = invoice.request
    description = escape(request.description or "")
    amount = _rupiah(request.amount)
    back = (
        f'<p><a href="{escape(invoice.return_url)}">Kembali ke {MERCHANT_NAME}</a></p>'
        if invoice.return_url
        else ""
    )
    return f"""<!doctype html>
<html lang="id">
<head><meta charset="utf-8"><title>{MERCHANT_NAME} · {amount}</title></head>
<body>
<main>
<h1>{MERCHANT_NAME}</h1>
<p class="description">{description}</p>
<p class="amount">{amount}</p>
<p class="status">{invoice.status}</p>
<p class="expiry">Bayar sebelum {xendit_time(invoice.expiry_date)}</p>
{pay_form}
{back}
<p><small>Xendit sandbox · invoice {invoice.id} · {escape(request.external_id)}</small></p>
</main>
</body>
</html>
"""


def _answered_to_browser(request: Request) -> bool:
    """The checkout page's form posts want the page back, API callers want JSON."""
    return "text/html" in request.headers.get("accept", "")


def create_app() -> FastAPI:
    settings = get_settings()
    sandbox = XenditSandbox(
        settings=settings,
        public_url=service_url("xendit-sandbox", settings),
    )
    app = create_sandbox_app("xendit", lifespan=sandbox.webhook_sender.lifespan)
    app.include_router(payout_router(sandbox))

    @app.exception_handler(XenditApiError)
    async def xendit_error(_: Request, exc: XenditApiError) -> JSONResponse:
        return JSONResponse(exc.body, status_code=exc.status)

    def invoice_json(invoice: SandboxInvoice, status_code: int = 200) -> JSONResponse:
        return JSONResponse(invoice.as_resource(), status_code=status_code)

    # Xendit serves its paths with and without a trailing slash (its SDKs post to
    # `/v2/invoices/`); both are answered directly, never redirected.
    @app.post("/v2/invoices", tags=["invoice-api"])
    @app.post("/v2/invoices/", include_in_schema=False)
    async def create_invoice(request: Request) -> Response:
        sandbox.authenticate(request.headers.get("authorization"))
        try:
            body = await request.json()
        except ValueError:
            raise XenditApiError(
                400, "API_VALIDATION_ERROR", "The request body is not valid JSON"
            ) from None
        try:
            invoice_request = CreateInvoiceRequest.model_validate(body)
        except ValidationError as exc:
            raise validation_error(exc) from None
        return invoice_json(sandbox.create(invoice_request))

    @app.get("/v2/invoices", tags=["invoice-api"])
    @app.get("/v2/invoices/", include_in_schema=False)
    async def list_invoices_api(
        request: Request,
        external_id: str | None = None,
        statuses: Annotated[list[str] | None, Query()] = None,
        limit: Annotated[int, Query(ge=1, le=100)] = 10,
    ) -> Response:
        """Invoices, newest first, narrowed to one `external_id` and to `statuses`."""
        sandbox.authenticate(request.headers.get("authorization"))
        found = [
            invoice.as_resource()
            for invoice in reversed(sandbox.invoices.values())
            if external_id in (None, invoice.request.external_id)
            and (not statuses or invoice.status in statuses)
        ]
        return JSONResponse(found[:limit])

    @app.get("/v2/invoices/{invoice_id}", tags=["invoice-api"])
    async def get_invoice(invoice_id: str, request: Request) -> Response:
        sandbox.authenticate(request.headers.get("authorization"))
        return invoice_json(sandbox.find(invoice_id))

    @app.post("/invoices/{invoice_id}/expire!", tags=["invoice-api"])
    async def expire_invoice(invoice_id: str, request: Request) -> Response:
        sandbox.authenticate(request.headers.get("authorization"))
        invoice = sandbox.find(invoice_id)
        sandbox.expire(invoice)
        return invoice_json(invoice)

    @app.get("/checkout/{invoice_id}", response_class=HTMLResponse, tags=["checkout"])
    async def checkout(invoice_id: str) -> HTMLResponse:
        invoice = sandbox.invoices.get(invoice_id)
        if invoice is None:
            return HTMLResponse("<h1>Invoice not found</h1>", status_code=404)
        return HTMLResponse(_checkout_page(invoice))

    async def act_on_invoice(
        invoice_id: str, request: Request, action: Callable[[SandboxInvoice], None]
    ) -> Response:
        invoice = sandbox.find(invoice_id)
        if not _answered_to_browser(request):
            action(invoice)
            return invoice_json(invoice)
        with suppress(XenditApiError):  # the page shows why nothing changed
            action(invoice)
        # Like Xendit's checkout: back to the merchant once paid or expired, if it said where.
        return RedirectResponse(invoice.return_url or f"/checkout/{invoice_id}", status_code=303)

    @app.post("/sandbox/invoices/{invoice_id}/pay", tags=["sandbox"])
    async def pay_invoice(invoice_id: str, request: Request) -> Response:
        """Pay as the buyer would: PAID, then the PAID callback; 409 once expired."""
        return await act_on_invoice(invoice_id, request, sandbox.pay)

    @app.post("/sandbox/invoices/{invoice_id}/expire", tags=["sandbox"])
    async def expire_invoice_now(invoice_id: str, request: Request) -> Response:
        """Let the expiry date pass: EXPIRED, then the EXPIRED callback."""
        return await act_on_invoice(invoice_id, request, sandbox.expire)

    @app.post("/sandbox/invoices/{invoice_id}/lose-callbacks", tags=["sandbox"])
    async def lose_callbacks(invoice_id: str) -> Response:
        """From now on this invoice's callbacks are never delivered (as when Xendit gives up,
        or does not send EXPIRED): payment-service can only learn of it by asking Xendit."""
        invoice = sandbox.find(invoice_id)
        invoice.callbacks_lost = True
        return invoice_json(invoice)

    @app.post("/sandbox/invoices/{invoice_id}/resend-webhook", tags=["sandbox"])
    async def resend_webhook(invoice_id: str, request: Request) -> Response:
        """Send the callback of the invoice's current state again, as a duplicate."""
        return await act_on_invoice(invoice_id, request, sandbox.send_callback)

    @app.get("/sandbox/invoices", tags=["sandbox"])
    async def list_invoices() -> JSONResponse:
        """Every invoice since start, oldest first, as the API shows them."""
        return JSONResponse([invoice.as_resource() for invoice in sandbox.invoices.values()])

    @app.get("/sandbox/webhooks", response_model=list[InvoiceWebhookAttempt], tags=["sandbox"])
    async def list_webhook_attempts(
        invoice_id: Annotated[str | None, Query(alias="invoiceId")] = None,
    ) -> list[InvoiceWebhookAttempt]:
        """Every callback delivery attempt, oldest first; `invoiceId` narrows to one invoice."""
        return [a for a in sandbox.webhooks.attempts if invoice_id in (None, a.invoice_id)]

    return app
