"""Xendit Payouts API (v2) client: send money to a bank account and read the payout back.

As in Xendit's reference: `POST {base}/v2/payouts` with an `Idempotency-key` header,
`GET {base}/v2/payouts/{id}` and `GET {base}/v2/payouts?reference_id=...`, with the same Basic
auth and `{"error_code", "message"}` refusals as the Invoice API. A payout is created ACCEPTED;
Xendit then reports it SUCCEEDED or FAILED (with a `failure_code`), and a SUCCEEDED one that the
bank sent back REVERSED, by POSTing the `payout.succeeded` / `payout.failed` /
`payout.reversed` webhook with the `x-callback-token` header. Those webhooks are only hints:
the payout is read back before anything is done about them.
"""

from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from laku.core.settings import Settings
from laku.providers.xendit.client import (
    CURRENCY,
    XenditError,
    _api_error,
    api_auth,
    api_base_url,
)

T = TypeVar("T")

# Xendit's answer when an Idempotency-key was used before (the payout exists).
_DUPLICATE_ERROR_CODES = frozenset({"DUPLICATE_TRANSACTION_ERROR", "DUPLICATE_ERROR"})


class XenditPayout(BaseModel):
    """The payout fields Laku relies on, named as in Xendit's JSON; the rest is ignored."""

    model_config = ConfigDict(extra="ignore")

    id: str
    reference_id: str
    status: str  # ACCEPTED | REQUESTED | SUCCEEDED | FAILED | CANCELLED | REVERSED
    amount: int  # IDR has no minor unit
    currency: str
    channel_code: str
    failure_code: str | None = None


def channel_code(bank_code: str) -> str:
    """Xendit's payout channel for an Indonesian bank: BCA -> ID_BCA."""
    return f"ID_{bank_code}"


class XenditPayoutPage(BaseModel):
    """A page of `GET /v2/payouts`."""

    model_config = ConfigDict(extra="ignore")

    data: list[XenditPayout]
    has_more: bool = False


_payout = TypeAdapter(XenditPayout)
_payouts = TypeAdapter(XenditPayoutPage)


class XenditPayoutClient:
    """One request per call; creating is safe to repeat with the same idempotency key."""

    def __init__(self, http: httpx.AsyncClient, settings: Settings) -> None:
        self._http = http
        self._base_url = api_base_url(settings)
        self._auth = api_auth(settings)

    async def create_payout(
        self,
        *,
        reference_id: str,
        amount: int,
        channel_code: str,
        account_holder_name: str,
        account_number: str,
        description: str,
        idempotency_key: str,
    ) -> XenditPayout:
        """An ACCEPTED payout. Repeating it with the same `idempotency_key` creates nothing
        more: if Xendit answers that the key was used, the payout made under `reference_id`
        is returned instead."""
        body: dict[str, Any] = {
            "reference_id": reference_id,
            "channel_code": channel_code,
            "channel_properties": {
                "account_holder_name": account_holder_name,
                "account_number": account_number,
            },
            "amount": amount,
            "description": description,
            "currency": CURRENCY,
        }
        try:
            response = await self._call(
                "POST", "/v2/payouts", json=body, headers={"Idempotency-key": idempotency_key}
            )
        except XenditError as exc:
            if exc.error_code not in _DUPLICATE_ERROR_CODES:
                raise
            made = await self.find_payouts(reference_id)
            if not made:
                raise
            return made[0]
        return _parse(response, _payout)

    async def get_payout(self, payout_id: str) -> XenditPayout:
        return _parse(await self._call("GET", f"/v2/payouts/{payout_id}"), _payout)

    async def find_payouts(self, reference_id: str) -> list[XenditPayout]:
        """The payouts made under `reference_id`, oldest first (none: an empty list); the first
        page is enough, as a reference has one payout or a few."""
        response = await self._call("GET", "/v2/payouts", params={"reference_id": reference_id})
        return _parse(response, _payouts).data

    async def _call(
        self,
        method: str,
        path: str,
        *,
        json: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        url = self._base_url + path
        try:
            response = await self._http.request(
                method, url, json=json, params=params, headers=headers, auth=self._auth
            )
        except httpx.HTTPError as exc:
            raise XenditError(f"Xendit unreachable: {method} {url}: {exc!r}") from exc
        if not response.is_success:
            raise _api_error(response)
        return response


def _parse(response: httpx.Response, shape: TypeAdapter[T]) -> T:
    try:
        return shape.validate_python(response.json())
    except (ValueError, ValidationError) as exc:
        raise XenditError(
            f"Xendit answered {response.status_code} without a readable payout",
            status=response.status_code,
        ) from exc
