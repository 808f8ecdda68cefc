"""Xendit Payouts API (v2) in the xendit-sandbox: bank payouts as the real API keeps them.

It speaks the Payouts contract (`POST /v2/payouts` with a required `Idempotency-key`,
`GET /v2/payouts/{id}`, `GET /v2/payouts?reference_id=` (a page: `{"data": [...], "has_more"}`),
`POST /v2/payouts/{id}/cancel`, the same Basic auth and `{"error_code", "message"}` refusals as
invoices). A payout is created ACCEPTED; like Xendit, the sandbox reports it SUCCEEDED, FAILED
or (after it succeeded) REVERSED by POSTing the `payout.succeeded` / `payout.failed` /
`payout.reversed` webhook with the `x-callback-token` header, retried with back-off when it is
not accepted. A cancelled payout is CANCELLED with no webhook.

Where Xendit's behaviour is not spelled out, the sandbox chooses: the same Idempotency-key with
the same request answers the payout it made; with another request it is refused (409
`DUPLICATE_TRANSACTION_ERROR`). Succeeding a SUCCEEDED payout or failing a FAILED one changes
nothing and sends nothing; a settled payout cannot be settled the other way (409).

Under `/sandbox`: settle or reverse a payout as the bank would, send its webhook again or lose
its webhooks from now on, and list payouts and webhook attempts. Everything is kept in memory
and lost on restart.
"""

import json
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Protocol

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import AliasPath, BaseModel, ConfigDict, Field, ValidationError

from laku.core.sandbox import WebhookAttempt, WebhookLog, WebhookSender
from laku.core.services import service_url
from laku.core.settings import Settings
from laku.providers.xendit.sandbox_api import XenditApiError, validation_error, xendit_time


class SandboxAccount(Protocol):
    """What payouts need of the sandbox they are kept in: its account, its API key check and
    its webhook sender, which POSTs with the x-callback-token and retries with back-off as
    Xendit does (the invoice sandbox, `sandbox.py`, is one)."""

    settings: Settings
    user_id: str
    webhook_sender: WebhookSender

    def authenticate(self, authorization: str | None) -> None: ...


# Indonesian bank channels the sandbox pays out to (Xendit supports more).
SUPPORTED_CHANNELS = frozenset(
    f"ID_{bank}"
    for bank in ("BCA", "BNI", "BRI", "MANDIRI", "PERMATA", "CIMB", "BSI", "DANAMON", "BTN")
)
# Xendit's reasons for a FAILED payout (those its API reference and SDKs list).
FAILURE_CODES = frozenset(
    {
        "INSUFFICIENT_BALANCE",
        "INVALID_DESTINATION",
        "REJECTED_BY_CHANNEL",
        "TEMPORARY_TRANSFER_ERROR",
        "TRANSFER_ERROR",
    }
)
# The statuses Xendit reports by webhook (`payout.succeeded`, `payout.failed`,
# `payout.reversed`).
_WEBHOOK_STATUSES = ("SUCCEEDED", "FAILED", "REVERSED")
_ESTIMATED_ARRIVAL = timedelta(minutes=5)


class ChannelProperties(BaseModel):
    model_config = ConfigDict(extra="ignore")

    account_holder_name: Annotated[str, Field(min_length=1, max_length=100)]
    account_number: Annotated[str, Field(min_length=1, max_length=100)]


class CreatePayoutRequest(BaseModel):
    """The `POST /v2/payouts` fields Laku sends; Xendit's other optional fields are ignored."""

    model_config = ConfigDict(extra="ignore")

    reference_id: Annotated[str, Field(min_length=1, max_length=255)]
    channel_code: Annotated[str, Field(min_length=1)]
    channel_properties: ChannelProperties
    amount: Annotated[int, Field(ge=1)]
    description: Annotated[str, Field(max_length=100)] | None = None
    currency: str = "IDR"


@dataclass
class SandboxPayout:
    id: str
    business_id: str
    request: CreatePayoutRequest
    created: datetime
    status: str = "ACCEPTED"
    failure_code: str | None = None
    updated: datetime = field(default_factory=lambda: datetime.now(UTC))
    # Set under /sandbox: Xendit's webhooks for this payout are lost (never delivered).
    webhooks_lost: bool = False

    def as_resource(self) -> dict[str, Any]:
        """The payout as the API returns it (and as a webhook's `data`)."""
        resource = {
            "id": self.id,
            "amount": self.request.amount,
            "channel_code": self.request.channel_code,
            "currency": self.request.currency,
            "status": self.status,
            "description": self.request.description,
            "reference_id": self.request.reference_id,
            "created": xendit_time(self.created),
            "updated": xendit_time(self.updated),
            "estimated_arrival_time": xendit_time(self.created + _ESTIMATED_ARRIVAL),
            "business_id": self.business_id,
            "channel_properties": self.request.channel_properties.model_dump(),
        }
        if self.failure_code is not None:
            resource["failure_code"] = self.failure_code
        return resource

    def as_webhook(self) -> dict[str, Any]:
        return {
            "event": f"payout.{self.status.lower()}",
            "business_id": self.business_id,
            "created": xendit_time(datetime.now(UTC)),
            "data": self.as_resource(),
        }


class PayoutWebhookAttempt(WebhookAttempt):
    payout_id: str = Field(validation_alias=AliasPath("payload", "data", "id"))
    reference_id: str = Field(validation_alias=AliasPath("payload", "data", "reference_id"))
    event: str = Field(validation_alias=AliasPath("payload", "event"))


@dataclass
class PayoutDesk:
    """The sandbox's payouts, kept beside its invoices and delivered through its webhooks."""

    sandbox: SandboxAccount
    payouts: dict[str, SandboxPayout] = field(default_factory=dict)
    # Idempotency-key -> (the request's fingerprint, the payout it made).
    idempotency_keys: dict[str, tuple[str, str]] = field(default_factory=dict)
    webhooks: WebhookLog[PayoutWebhookAttempt] = field(init=False)

    def __post_init__(self) -> None:
        self.webhooks = WebhookLog(self.sandbox.webhook_sender, PayoutWebhookAttempt)

    @property
    def webhook_url(self) -> str:
        settings = self.sandbox.settings
        return (
            settings.xendit_payout_webhook_url
            or f"{service_url('wallet', settings)}/api/wallets/payouts/webhook"
        )

    def find(self, payout_id: str) -> SandboxPayout:
        payout = self.payouts.get(payout_id)
        if payout is None:
            raise XenditApiError(404, "DATA_NOT_FOUND", f"Payout {payout_id} not found")
        return payout

    def create(self, idempotency_key: str, request: CreatePayoutRequest) -> SandboxPayout:
        fingerprint = request.model_dump_json()
        if made := self.idempotency_keys.get(idempotency_key):
            made_for, payout_id = made
            if made_for != fingerprint:
                raise XenditApiError(
                    409,
                    "DUPLICATE_TRANSACTION_ERROR",
                    "Idempotency key has been used before with another request",
                )
            return self.payouts[payout_id]
        if request.currency != "IDR":
            raise XenditApiError(
                400, "API_VALIDATION_ERROR", f"Currency {request.currency} is not supported"
            )
        if request.channel_code not in SUPPORTED_CHANNELS:
            raise XenditApiError(
                400,
                "CHANNEL_CODE_NOT_SUPPORTED_ERROR",
                f"Channel {request.channel_code} is not supported",
            )
        payout = SandboxPayout(
            id=f"disb-{secrets.token_hex(12)}",
            business_id=self.sandbox.user_id,
            request=request,
            created=datetime.now(UTC),
        )
        self.payouts[payout.id] = payout
        self.idempotency_keys[idempotency_key] = (fingerprint, payout.id)
        return payout

    def settle(
        self,
        payout: SandboxPayout,
        status: str,
        failure_code: str | None = None,
        *,
        settles: str = "ACCEPTED",
    ) -> None:
        """Move a payout that is `settles` to `status` (the bank's answer: SUCCEEDED or FAILED;
        a SUCCEEDED one REVERSED), then its webhook, once."""
        if payout.status == status:
            return
        if payout.status != settles:
            raise XenditApiError(
                409, "INVALID_PAYOUT_STATUS", f"Payout {payout.id} is already {payout.status}"
            )
        payout.status = status
        payout.failure_code = failure_code
        payout.updated = datetime.now(UTC)
        self.send_webhook(payout)

    def cancel(self, payout: SandboxPayout) -> None:
        """The merchant calls an ACCEPTED payout off: CANCELLED (Xendit sends no webhook)."""
        if payout.status == "CANCELLED":
            return
        if payout.status != "ACCEPTED":
            raise XenditApiError(
                409,
                "PAYOUT_NOT_CANCELLABLE",
                f"Payout {payout.id} is {payout.status}; only an ACCEPTED payout can be cancelled",
            )
        payout.status = "CANCELLED"
        payout.updated = datetime.now(UTC)

    def send_webhook(self, payout: SandboxPayout) -> None:
        if payout.status not in _WEBHOOK_STATUSES:
            raise XenditApiError(
                409,
                "PAYOUT_STATUS_HAS_NO_WEBHOOK",
                f"Payout {payout.id} is {payout.status}; webhooks report "
                + ", ".join(_WEBHOOK_STATUSES),
            )
        if payout.webhooks_lost:
            return
        # The payload is what happened now, even if the payout moves on while retrying.
        self.webhooks.send(self.webhook_url, payout.as_webhook())


def payout_router(sandbox: SandboxAccount) -> APIRouter:
    desk = PayoutDesk(sandbox)

    async def authenticated(request: Request) -> None:
        sandbox.authenticate(request.headers.get("authorization"))

    # Xendit's API asks for the account's API key; the sandbox's own controls do not.
    api = APIRouter(tags=["payout-api"], dependencies=[Depends(authenticated)])
    router = APIRouter()

    def payout_json(payout: SandboxPayout) -> JSONResponse:
        return JSONResponse(payout.as_resource())

    @api.post("/v2/payouts")
    async def create_payout(request: Request) -> JSONResponse:
        idempotency_key = request.headers.get("idempotency-key")
        if not idempotency_key or len(idempotency_key) > 100:
            raise XenditApiError(
                400, "API_VALIDATION_ERROR", "Idempotency-key header of 1 to 100 characters"
            )
        try:
            body = json.loads(await request.body())
            payout_request = CreatePayoutRequest.model_validate(body)
        except ValidationError as exc:  # before ValueError, which it is too
            raise validation_error(exc) from None
        except ValueError:
            raise XenditApiError(
                400, "INVALID_JSON_FORMAT", "The request body is not valid JSON"
            ) from None
        return payout_json(desk.create(idempotency_key, payout_request))

    @api.get("/v2/payouts/{payout_id}")
    async def get_payout(payout_id: str) -> JSONResponse:
        return payout_json(desk.find(payout_id))

    @api.post("/v2/payouts/{payout_id}/cancel")
    async def cancel_payout(payout_id: str) -> JSONResponse:
        """Call off a payout the bank has not been asked to make yet (ACCEPTED): CANCELLED."""
        payout = desk.find(payout_id)
        desk.cancel(payout)
        return payout_json(payout)

    @api.get("/v2/payouts")
    async def payouts_by_reference(
        reference_id: str, limit: Annotated[int, Query(ge=1, le=100)] = 10
    ) -> JSONResponse:
        """The payouts made under `reference_id`, oldest first, `limit` a page (the first page
        only: the sandbox never has more than a few per reference)."""
        made = [
            payout.as_resource()
            for payout in desk.payouts.values()
            if payout.request.reference_id == reference_id
        ]
        return JSONResponse({"data": made[:limit], "has_more": len(made) > limit})

    @router.post("/sandbox/payouts/{payout_id}/succeed", tags=["sandbox"])
    async def succeed(payout_id: str) -> JSONResponse:
        """The bank credits the account: SUCCEEDED, then the payout.succeeded webhook."""
        payout = desk.find(payout_id)
        desk.settle(payout, "SUCCEEDED")
        return payout_json(payout)

    @router.post("/sandbox/payouts/{payout_id}/fail", tags=["sandbox"])
    async def fail(
        payout_id: str,
        failure_code: Annotated[str, Query(alias="failureCode")] = "INVALID_DESTINATION",
    ) -> JSONResponse:
        """The bank refuses: FAILED with `failureCode`, then the payout.failed webhook."""
        if failure_code not in FAILURE_CODES:
            raise XenditApiError(
                400, "API_VALIDATION_ERROR", f"failureCode is one of {sorted(FAILURE_CODES)}"
            )
        payout = desk.find(payout_id)
        desk.settle(payout, "FAILED", failure_code)
        return payout_json(payout)

    @router.post("/sandbox/payouts/{payout_id}/reverse", tags=["sandbox"])
    async def reverse(payout_id: str) -> JSONResponse:
        """The bank sends a SUCCEEDED payout's money back (as Xendit's test mode lets you
        simulate): REVERSED, then the payout.reversed webhook."""
        payout = desk.find(payout_id)
        desk.settle(payout, "REVERSED", settles="SUCCEEDED")
        return payout_json(payout)

    @router.post("/sandbox/payouts/{payout_id}/lose-webhooks", tags=["sandbox"])
    async def lose_webhooks(payout_id: str) -> JSONResponse:
        """From now on this payout's webhooks are never delivered: wallet-service can only
        learn of its outcome by asking Xendit."""
        payout = desk.find(payout_id)
        payout.webhooks_lost = True
        return payout_json(payout)

    @router.post("/sandbox/payouts/{payout_id}/resend-webhook", tags=["sandbox"])
    async def resend_webhook(payout_id: str) -> JSONResponse:
        """Send the webhook of the payout's current state again, as a duplicate."""
        payout = desk.find(payout_id)
        desk.send_webhook(payout)
        return payout_json(payout)

    @router.get("/sandbox/payouts", tags=["sandbox"])
    async def list_payouts() -> JSONResponse:
        """Every payout since start, oldest first, as the API shows them."""
        return JSONResponse([payout.as_resource() for payout in desk.payouts.values()])

    @router.get(
        "/sandbox/payout-webhooks", response_model=list[PayoutWebhookAttempt], tags=["sandbox"]
    )
    async def list_webhook_attempts(
        payout_id: Annotated[str | None, Query(alias="payoutId")] = None,
    ) -> list[PayoutWebhookAttempt]:
        """Every payout webhook delivery attempt, oldest first; `payoutId` narrows to one."""
        return [a for a in desk.webhooks.attempts if payout_id in (None, a.payout_id)]

    router.include_router(api)
    return router
