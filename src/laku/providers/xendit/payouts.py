"""Xendit Payouts API (v2) client: send money to a bank account and read the payout back.

As in Xendit's reference: `POST {base}/v2/payouts` with an `Idempotency-key` header,
`GET {base}/v2/payouts/{id}` and `GET {base}/v2/payouts?reference_id=...`, with the same Basic
auth and `{"error_code", "message"}` refusals as the Invoice API. A payout is created ACCEPTED;
Xendit then reports it SUCCEEDED or FAILED (with a `failure_code`), and a SUCCEEDED one that the
bank sent back REVERSED, by POSTing the `payout.succeeded` / `payout.failed` /
`payout.reversed` webhook with the `x-callback-token` header. Those webhooks are only hints:
the payout is read back before anything is done about them.

`PayoutFlow` is the one way a service pays money out (wallet's withdrawals, settlement's
factory settlements): request the payout once per reference, record it, follow it until
Xendit shows it settled, and check that what Xendit shows is the payout asked for. What a
settled, failed or refused payout means stays the service's own.
"""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import structlog
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from laku.core.errors import UpstreamUnavailable
from laku.core.outbox import RetryLater
from laku.core.settings import Settings
from laku.providers.xendit.client import (
    CURRENCY,
    XenditError,
    _api_error,
    api_auth,
    xendit_base_url,
)

T = TypeVar("T")
log = structlog.get_logger()

# Xendit's answer when an Idempotency-key was used before (the payout exists).
_DUPLICATE_ERROR_CODES = frozenset({"DUPLICATE_TRANSACTION_ERROR", "DUPLICATE_ERROR"})
# A payout Xendit refuses for what it says (an unknown account, an amount out of limits).
_REFUSED_FOR_ITS_CONTENT = 400
_NOT_FOUND = 404

# A payout's statuses at Xendit that settle it (the others, ACCEPTED, REQUESTED and LOCKED,
# mean it is still on its way). REVERSED: the bank sent the money back after it SUCCEEDED.
PAYOUT_SUCCEEDED = "SUCCEEDED"
PAYOUT_NOT_MADE = frozenset({"FAILED", "CANCELLED"})
PAYOUT_REVERSED = "REVERSED"
PAYOUT_FINAL = PAYOUT_NOT_MADE | {PAYOUT_SUCCEEDED, PAYOUT_REVERSED}


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
        self._base_url = xendit_base_url(settings)
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


class PayoutNotSettled(RetryLater):
    """The payout is still on its way (or is not the one asked for); the outbox looks at it
    again later."""


class PayoutProviderUnavailable(UpstreamUnavailable):
    code = "payout_provider_unavailable"
    title = "The payout provider is unavailable"


@dataclass(frozen=True)
class PayoutOrder:
    """Money a service pays out: its `reference` is the payout's `reference_id` and its
    Idempotency-key, so asking again after a crash or a lost answer makes one payout."""

    reference: str
    amount: int
    bank_code: str
    account_holder_name: str
    account_number: str
    description: str


def payout_mismatch(order: PayoutOrder, payout: XenditPayout, payout_id: str) -> str | None:
    """Why the payout Xendit showed is not the order's payout `payout_id`, or None when it is."""
    expected = {
        "id": payout_id,
        "reference_id": order.reference,
        "currency": CURRENCY,
        "amount": order.amount,
    }
    for name, value in expected.items():
        if (shown := getattr(payout, name)) != value:
            return f"{name} {shown} is not {value}"
    return None


def _is_the_orders(order: PayoutOrder, payout: XenditPayout, payout_id: str) -> bool:
    """Whether Xendit showed the order's payout; when it did not, someone must look."""
    mismatch = payout_mismatch(order, payout, payout_id)
    if mismatch is not None:
        log.error("payout_does_not_match_order", reference=order.reference, reason=mismatch)
    return mismatch is None


class PayoutFlow:
    """Requesting a payout and following it until it settles, as an outbox handler does: it
    raises `PayoutNotSettled` while the payout is on its way (the row is tried again with
    back-off), so the payout settles even if no webhook ever comes. Any Xendit error other
    than a refusal of what was asked is raised too, to be tried again."""

    def __init__(self, payouts: XenditPayoutClient) -> None:
        self._payouts = payouts

    async def settled_payout(
        self,
        order: PayoutOrder,
        payout_id: str | None,
        *,
        record: Callable[[str], Awaitable[None]],
        refused: Callable[[str], Awaitable[None]],
    ) -> XenditPayout | None:
        """The order's payout once Xendit shows it settled (a status in `PAYOUT_FINAL`).
        Requested once when `payout_id` is None, its id then given to `record`; None when
        Xendit refused to make it, after `refused` was given Xendit's error code."""
        if payout_id is None:
            payout = await self._request(order, refused)
            if payout is None:
                return None
            await record(payout.id)
        else:
            payout = await self._payouts.get_payout(payout_id)
        if not _is_the_orders(order, payout, payout_id or payout.id):
            raise PayoutNotSettled(f"Payout {payout.id} is not {order.reference}'s")
        if payout.status not in PAYOUT_FINAL:
            raise PayoutNotSettled(f"Payout {payout.id} is {payout.status}")
        return payout

    async def _request(
        self, order: PayoutOrder, refused: Callable[[str], Awaitable[None]]
    ) -> XenditPayout | None:
        try:
            return await self._payouts.create_payout(
                reference_id=order.reference,
                amount=order.amount,
                channel_code=channel_code(order.bank_code),
                account_holder_name=order.account_holder_name,
                account_number=order.account_number,
                description=order.description,
                idempotency_key=order.reference,
            )
        except XenditError as exc:
            if exc.status != _REFUSED_FOR_ITS_CONTENT:
                raise
            log.warning(
                "payout_refused",
                reference=order.reference,
                error_code=exc.error_code,
                error=exc.message,
            )
            await refused(exc.error_code or "PAYOUT_REFUSED")
            return None

    async def confirmed_payout(self, order: PayoutOrder, payout_id: str) -> XenditPayout | None:
        """What a payout webhook hinted, read back from Xendit: the order's payout if Xendit
        shows it settled, else None (no such payout, not the order's, or still on its way).
        Xendit unreachable raises `PayoutProviderUnavailable` (503), so Xendit sends the
        webhook again."""
        try:
            payout = await self._payouts.get_payout(payout_id)
        except XenditError as exc:
            if exc.status == _NOT_FOUND:  # no such payout at Xendit: nothing to follow
                log.warning("payout_webhook_for_unknown_payout", payout_id=payout_id)
                return None
            log.warning("payout_read_back_failed", payout_id=payout_id, error=str(exc))
            raise PayoutProviderUnavailable(
                f"The payout could not be read back from Xendit: {exc.message}", retry_after=5
            ) from exc
        if not _is_the_orders(order, payout, payout_id):
            return None
        if payout.status not in PAYOUT_FINAL:
            log.warning(
                "payout_webhook_not_confirmed",
                reference=order.reference,
                payout_id=payout.id,
                xendit_status=payout.status,
            )
            return None
        return payout


def _parse(response: httpx.Response, shape: TypeAdapter[T]) -> T:
    try:
        return shape.validate_python(response.json())
    except (ValueError, ValidationError) as exc:
        raise XenditError(
            f"Xendit answered {response.status_code} without a readable payout",
            status=response.status_code,
        ) from exc
