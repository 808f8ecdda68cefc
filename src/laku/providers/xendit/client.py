"""Xendit Invoice API client: create, read and expire the invoices buyers pay through.

As in Xendit's reference: `POST {base}/v2/invoices`, `GET {base}/v2/invoices/{id}` and
`POST {base}/invoices/{id}/expire!`, with HTTP Basic auth (the secret key as user name, an empty
password). A refusal is `{"error_code": "...", "message": "..."}`. Xendit then reports payment
and expiry by POSTing the invoice to our webhook with the `x-callback-token` header, which
`verify_callback_token` checks.
"""

from datetime import datetime
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict

from laku.core.services import service_url
from laku.core.settings import Settings
from laku.providers.http import ProviderApi, ProviderError, api_base_url, refusal
from laku.providers.webhooks import secret_matches

CURRENCY = "IDR"
CALLBACK_TOKEN_HEADER = "x-callback-token"


class XenditInvoice(BaseModel):
    """The invoice fields Laku relies on, named as in Xendit's JSON; the rest is ignored."""

    model_config = ConfigDict(extra="ignore")

    id: str
    external_id: str
    status: str  # PENDING | PAID | SETTLED | EXPIRED
    amount: int
    currency: str
    invoice_url: str
    expiry_date: datetime
    paid_amount: int | None = None
    paid_at: datetime | None = None


class XenditError(ProviderError):
    """Xendit refused the request (`status` and `error_code` set) or could not be reached or
    understood (`error_code` None; `status` None when nothing was answered)."""

    provider = "Xendit"

    def __init__(self, message: str, *, status: int | None = None, error_code: str | None = None):
        super().__init__(message, status=status)
        self.error_code = error_code


def xendit_base_url(settings: Settings) -> str:
    """Every Xendit API's base: the real one's when `xendit_api_base_url` is set."""
    return api_base_url(settings.xendit_api_base_url, "xendit-sandbox", settings)


def api_auth(settings: Settings) -> httpx.BasicAuth:
    """Every Xendit API: Basic auth, the secret key as user name and an empty password."""
    return httpx.BasicAuth(settings.xendit_secret_key.get_secret_value(), "")


class XenditClient:
    """One request per call and no retries: the caller knows whether repeating is safe."""

    def __init__(self, http: httpx.AsyncClient, settings: Settings) -> None:
        self._api = ProviderApi(
            http,
            xendit_base_url(settings),
            error=XenditError,
            refusal=_api_error,
            auth=api_auth(settings),
        )
        self._default_duration_seconds = settings.invoice_duration_seconds
        self._return_url = (
            settings.payment_return_url or f"{service_url('web', settings)}/me/group-buys"
        )

    async def create_invoice(
        self,
        *,
        external_id: str,
        amount: int,
        description: str,
        payer_email: str | None = None,
        invoice_duration_seconds: int | None = None,
    ) -> XenditInvoice:
        """A new PENDING invoice; its `invoice_url` is the checkout page to send the buyer to.
        Xendit does not deduplicate `external_id`, so repeating this creates a second invoice."""
        body: dict[str, Any] = {
            "external_id": external_id,
            "amount": amount,
            "description": description,
            "invoice_duration": (
                self._default_duration_seconds
                if invoice_duration_seconds is None
                else invoice_duration_seconds
            ),
            "currency": CURRENCY,
            "success_redirect_url": self._return_url,
            "failure_redirect_url": self._return_url,
        }
        if payer_email is not None:
            body["payer_email"] = payer_email
        return await self._api.read("POST", "/v2/invoices", XenditInvoice, "invoice", json=body)

    async def get_invoice(self, invoice_id: str) -> XenditInvoice:
        return await self._api.read("GET", f"/v2/invoices/{invoice_id}", XenditInvoice, "invoice")

    async def expire_invoice(self, invoice_id: str) -> XenditInvoice:
        """Stop the invoice from being paid; Xendit sends the EXPIRED callback as well."""
        return await self._api.read(
            "POST", f"/invoices/{invoice_id}/expire!", XenditInvoice, "invoice"
        )


def _api_error(response: httpx.Response) -> XenditError:
    """A refusal of any Xendit API: `{"error_code", "message"}`."""
    return refusal(
        response,
        XenditError,
        lambda body: (body["message"], {"error_code": body.get("error_code")}),
    )


def verify_callback_token(settings: Settings, received: str | None) -> bool:
    """Whether a webhook's `x-callback-token` is ours."""
    return secret_matches(received, settings.xendit_callback_token)
