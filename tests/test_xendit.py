"""Xendit Invoice API client against the sandbox, and the sandbox's checkout and callbacks."""

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from laku.core.services import service_url
from laku.core.settings import Settings
from laku.providers.xendit.client import (
    XenditClient,
    XenditError,
    XenditInvoice,
    verify_callback_token,
)
from laku.providers.xendit.sandbox import RETRY_DELAYS_SECONDS
from laku.testing.platform import Platform
from tests.support import WebhookAttempt, sandbox_webhook_attempts, wait_for_sandbox_webhooks

Attempt = WebhookAttempt


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5.0) as client:
        yield client


@pytest.fixture
def xendit(platform: Platform, http: httpx.AsyncClient) -> XenditClient:
    return XenditClient(http, platform.settings)


def new_external_id() -> str:
    return f"PAY-{uuid.uuid4().hex[:12]}"


async def new_invoice(xendit: XenditClient, **fields: Any) -> XenditInvoice:
    return await xendit.create_invoice(
        **{
            "external_id": new_external_id(),
            "amount": 150_000,
            "description": "Kaos Polos M x 2",
            "payer_email": "siti@laku.id",
            **fields,
        }
    )


def sandbox_post(platform: Platform, invoice_id: str, action: str) -> httpx.Response:
    return platform.client("xendit-sandbox").post(f"/sandbox/invoices/{invoice_id}/{action}")


def webhook_attempts(platform: Platform, invoice_id: str) -> list[Attempt]:
    return sandbox_webhook_attempts(platform.client("xendit-sandbox"), invoiceId=invoice_id)


async def wait_for_attempts(
    platform: Platform,
    invoice_id: str,
    until: Callable[[list[Attempt]], bool],
    timeout_seconds: float = 5.0,
) -> list[Attempt]:
    return await wait_for_sandbox_webhooks(
        platform.client("xendit-sandbox"), until, timeout_seconds, invoiceId=invoice_id
    )


def first_attempts(attempts: list[Attempt]) -> list[Attempt]:
    """One per callback sent: retries of a refused delivery left out."""
    return [a for a in attempts if a["attempt"] == 1]


def payment_webhook_url(settings: Settings) -> str:
    return f"{service_url('payment', settings)}/api/payments/webhook"


def callback_token(settings: Settings) -> str:
    return settings.xendit_callback_token.get_secret_value()


async def test_client_creates_reads_and_expires_an_invoice(
    platform: Platform, xendit: XenditClient
) -> None:
    external_id = new_external_id()
    before = datetime.now(UTC)
    created = await xendit.create_invoice(
        external_id=external_id,
        amount=1_250_000,
        description="Gamis Katun L x 5",
        payer_email="siti@laku.id",
        invoice_duration_seconds=3600,
    )

    assert len(created.id) == 24 and int(created.id, 16) >= 0
    assert (created.external_id, created.status, created.amount) == (
        external_id,
        "PENDING",
        1_250_000,
    )
    assert created.invoice_url == f"{platform.url('xendit-sandbox')}/checkout/{created.id}"
    expected_expiry = before + timedelta(seconds=3600)
    assert abs(created.expiry_date - expected_expiry) < timedelta(seconds=5)
    assert created.paid_at is None
    assert await xendit.get_invoice(created.id) == created

    expired = await xendit.expire_invoice(created.id)
    assert expired.status == "EXPIRED"
    assert (await xendit.get_invoice(created.id)).status == "EXPIRED"
    assert (await xendit.expire_invoice(created.id)).status == "EXPIRED"  # again: unchanged

    await wait_for_attempts(platform, created.id, lambda a: len(a) >= 1)
    [attempt] = first_attempts(webhook_attempts(platform, created.id))  # one, though expired twice
    assert attempt["status"] == "EXPIRED"
    assert attempt["payload"]["status"] == "EXPIRED"
    assert "paid_at" not in attempt["payload"]


async def test_a_second_invoice_for_the_same_external_id_is_a_new_invoice(
    xendit: XenditClient,
) -> None:
    external_id = new_external_id()
    first = await new_invoice(xendit, external_id=external_id)
    second = await new_invoice(xendit, external_id=external_id)
    assert first.id != second.id
    assert first.external_id == second.external_id == external_id


async def test_the_default_invoice_duration_comes_from_settings(
    platform: Platform, xendit: XenditClient
) -> None:
    invoice = await xendit.create_invoice(
        external_id=new_external_id(), amount=10_000, description="Topi"
    )
    duration = timedelta(seconds=platform.settings.invoice_duration_seconds)
    expected_expiry = datetime.now(UTC) + duration
    assert abs(invoice.expiry_date - expected_expiry) < timedelta(seconds=5)


async def test_a_wrong_secret_key_is_refused_and_creates_nothing(
    platform: Platform, http: httpx.AsyncClient
) -> None:
    settings = platform.settings.model_copy(
        update={"xendit_secret_key": SecretStr("xnd_development_not_ours")}
    )
    external_id = new_external_id()
    with pytest.raises(XenditError) as refused:
        await XenditClient(http, settings).create_invoice(
            external_id=external_id, amount=10_000, description="Topi"
        )

    assert (refused.value.status, refused.value.error_code) == (401, "INVALID_API_KEY")
    invoices = platform.client("xendit-sandbox").get("/sandbox/invoices").json()
    assert external_id not in {invoice["external_id"] for invoice in invoices}


async def test_client_raises_the_validation_error(xendit: XenditClient) -> None:
    with pytest.raises(XenditError) as refused:
        await new_invoice(xendit, amount=0)
    assert (refused.value.status, refused.value.error_code) == (400, "API_VALIDATION_ERROR")
    assert "amount" in refused.value.message


async def test_an_unknown_invoice_is_not_found(xendit: XenditClient) -> None:
    with pytest.raises(XenditError) as missing:
        await xendit.get_invoice("0" * 24)
    assert (missing.value.status, missing.value.error_code) == (404, "INVOICE_NOT_FOUND_ERROR")


async def test_an_unreachable_api_raises_without_status(
    platform: Platform, http: httpx.AsyncClient
) -> None:
    settings = platform.settings.model_copy(update={"xendit_api_base_url": "http://127.0.0.1:9"})
    with pytest.raises(XenditError, match="unreachable") as unreachable:
        await XenditClient(http, settings).get_invoice("0" * 24)
    assert (unreachable.value.status, unreachable.value.error_code) == (None, None)


@pytest.mark.parametrize(
    "body",
    [
        {"amount": 10_000},  # no external_id
        {"external_id": "", "amount": 10_000},
        {"external_id": "PAY-1", "amount": 0},
        {"external_id": "PAY-1", "amount": -500},
        {"external_id": "PAY-1", "amount": "banyak"},
        {"external_id": "PAY-1", "amount": 10_000, "payer_email": "not-an-email"},
        {"external_id": "PAY-1", "amount": 10_000, "invoice_duration": 31_536_001},
        {"external_id": "PAY-1", "amount": 10_000, "description": "x" * 1001},
    ],
)
def test_sandbox_refuses_invalid_invoices_like_the_api(
    platform: Platform, body: dict[str, Any]
) -> None:
    response = httpx.post(
        f"{platform.url('xendit-sandbox')}/v2/invoices",
        json=body,
        auth=(platform.settings.xendit_secret_key.get_secret_value(), ""),
    )
    assert response.status_code == 400, response.text
    error = response.json()
    assert error["error_code"] == "API_VALIDATION_ERROR"
    assert error["message"]


async def test_checkout_page_shows_the_invoice_and_pays_it(
    platform: Platform, xendit: XenditClient, http: httpx.AsyncClient
) -> None:
    invoice = await new_invoice(xendit, amount=1_250_000, description="Kaos <Polos> M")

    page = await http.get(invoice.invoice_url)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "Rp 1.250.000" in page.text
    assert "Kaos &lt;Polos&gt; M" in page.text
    assert "PENDING" in page.text
    assert f'action="/sandbox/invoices/{invoice.id}/pay"' in page.text

    # What the page's Pay button does: a form post, answered by sending the buyer back to
    # the return URL the invoice was created with (Laku's "my group buys").
    paid = await http.post(
        f"{platform.url('xendit-sandbox')}/sandbox/invoices/{invoice.id}/pay",
        headers={"Accept": "text/html"},
    )
    my_group_buys = f"{platform.url('web')}/me/group-buys"
    assert paid.status_code == 303
    assert paid.headers["location"] == my_group_buys
    paid_invoice = (
        await http.get(
            f"{platform.url('xendit-sandbox')}/v2/invoices/{invoice.id}",
            auth=(platform.settings.xendit_secret_key.get_secret_value(), ""),
        )
    ).json()
    assert paid_invoice["status"] == "PAID"
    assert paid_invoice["success_redirect_url"] == my_group_buys
    assert paid_invoice["failure_redirect_url"] == my_group_buys
    # The checkout link, opened again, shows it paid with the way back.
    paid_page = await http.get(invoice.invoice_url)
    assert "PAID" in paid_page.text
    assert "<button" not in paid_page.text
    assert f'href="{my_group_buys}"' in paid_page.text
    unknown = await http.get(f"{platform.url('xendit-sandbox')}/checkout/{'0' * 24}")
    assert unknown.status_code == 404


async def test_paying_sends_the_paid_callback_with_the_token(
    platform: Platform, xendit: XenditClient
) -> None:
    invoice = await new_invoice(xendit, amount=300_000, description="Gamis L x 2")
    paid = sandbox_post(platform, invoice.id, "pay")
    assert paid.status_code == 200, paid.text
    assert paid.json()["status"] == "PAID"

    read = await xendit.get_invoice(invoice.id)
    assert read.status == "PAID"
    assert read.paid_at is not None
    assert abs(read.paid_at - datetime.now(UTC)) < timedelta(seconds=5)

    first, *_ = await wait_for_attempts(platform, invoice.id, lambda a: len(a) >= 1)
    assert (first["attempt"], first["status"]) == (1, "PAID")
    assert first["url"] == payment_webhook_url(platform.settings)
    assert first["headers"]["x-callback-token"] == callback_token(platform.settings)
    assert verify_callback_token(platform.settings, first["headers"]["x-callback-token"])
    payload = first["payload"]
    assert payload["id"] == invoice.id
    assert payload["external_id"] == invoice.external_id
    assert payload["status"] == "PAID"
    assert payload["amount"] == payload["paid_amount"] == 300_000
    assert payload["currency"] == "IDR"
    assert payload["payment_method"] == "BANK_TRANSFER"
    assert payload["bank_code"] and payload["payment_channel"]
    assert payload["payer_email"] == "siti@laku.id"
    assert payload["description"] == "Gamis L x 2"
    assert payload["merchant_name"] and payload["user_id"]
    assert datetime.fromisoformat(payload["paid_at"]) == read.paid_at
    assert payload["created"].endswith("Z") and payload["updated"].endswith("Z")


async def test_paying_twice_changes_nothing_and_a_resent_callback_is_identical(
    platform: Platform, xendit: XenditClient
) -> None:
    invoice = await new_invoice(xendit)
    first_payment = sandbox_post(platform, invoice.id, "pay").json()
    again = sandbox_post(platform, invoice.id, "pay")
    assert again.status_code == 200
    assert again.json()["paid_at"] == first_payment["paid_at"]

    resent = sandbox_post(platform, invoice.id, "resend-webhook")
    assert resent.status_code == 200, resent.text

    attempts = await wait_for_attempts(platform, invoice.id, lambda a: len(first_attempts(a)) >= 2)
    await asyncio.sleep(0.2)  # a delivery from the second payment would have started by now
    attempts = first_attempts(webhook_attempts(platform, invoice.id))
    assert len(attempts) == 2, attempts
    original, duplicate = attempts
    assert original["delivery"] != duplicate["delivery"]
    assert original["payload"] == duplicate["payload"]


async def test_an_expired_invoice_cannot_be_paid(platform: Platform, xendit: XenditClient) -> None:
    invoice = await new_invoice(xendit)
    expired = sandbox_post(platform, invoice.id, "expire")
    assert expired.status_code == 200
    assert expired.json()["status"] == "EXPIRED"

    refused = sandbox_post(platform, invoice.id, "pay")
    assert refused.status_code == 409
    assert refused.json()["error_code"] == "INVOICE_EXPIRED"
    read = await xendit.get_invoice(invoice.id)
    assert (read.status, read.paid_at) == ("EXPIRED", None)

    [attempt, *_] = await wait_for_attempts(platform, invoice.id, lambda a: len(a) >= 1)
    assert attempt["payload"]["status"] == "EXPIRED"
    assert attempt["headers"]["x-callback-token"] == callback_token(platform.settings)


async def test_a_paid_invoice_cannot_be_expired(platform: Platform, xendit: XenditClient) -> None:
    invoice = await new_invoice(xendit)
    sandbox_post(platform, invoice.id, "pay").raise_for_status()
    with pytest.raises(XenditError) as refused:
        await xendit.expire_invoice(invoice.id)
    assert (refused.value.status, refused.value.error_code) == (404, "INVOICE_NOT_FOUND_ERROR")
    assert (await xendit.get_invoice(invoice.id)).status == "PAID"


async def test_a_pending_invoice_has_no_callback_to_resend(
    platform: Platform, xendit: XenditClient
) -> None:
    invoice = await new_invoice(xendit)
    refused = sandbox_post(platform, invoice.id, "resend-webhook")
    assert refused.status_code == 409
    assert webhook_attempts(platform, invoice.id) == []


async def test_an_invoice_expires_by_itself_at_its_expiry_date(
    platform: Platform, xendit: XenditClient
) -> None:
    invoice = await new_invoice(xendit, invoice_duration_seconds=1)
    [attempt, *_] = await wait_for_attempts(platform, invoice.id, lambda a: len(a) >= 1)
    assert attempt["payload"]["status"] == "EXPIRED"
    assert (await xendit.get_invoice(invoice.id)).status == "EXPIRED"


async def test_callbacks_are_retried_with_back_off_until_payment_service_answers(
    platform: Platform, xendit: XenditClient
) -> None:
    invoice = await new_invoice(xendit)
    platform.supervisor.stop("payment")
    try:
        sandbox_post(platform, invoice.id, "pay").raise_for_status()
        failed = await wait_for_attempts(platform, invoice.id, lambda a: len(a) >= 2)
    finally:
        platform.supervisor.start_one("payment")
        platform.supervisor.wait_ready()

    for attempt in failed:
        assert attempt["responseStatus"] is None
        assert "Connect" in attempt["error"]
        assert not attempt["delivered"]
    answered = await wait_for_attempts(
        platform,
        invoice.id,
        lambda a: a[-1]["responseStatus"] is not None,
        timeout_seconds=sum(RETRY_DELAYS_SECONDS[:4]) + 2,
    )

    # Payment-service got the same callback once it was back, however it answered.
    assert {a["delivery"] for a in answered} == {failed[0]["delivery"]}
    assert [a["attempt"] for a in answered] == list(range(1, len(answered) + 1))
    assert answered[-1]["payload"] == failed[0]["payload"]
    assert answered[-1]["url"] == payment_webhook_url(platform.settings)
    sent_at = [datetime.fromisoformat(a["at"]) for a in answered]
    gaps = [later - earlier for earlier, later in itertools.pairwise(sent_at)]
    for gap, delay in zip(gaps, RETRY_DELAYS_SECONDS, strict=False):
        assert gap >= timedelta(seconds=delay * 0.9)


def test_verify_callback_token() -> None:
    settings = Settings(xendit_callback_token=SecretStr("laku-callback-token"))
    assert verify_callback_token(settings, "laku-callback-token")
    assert not verify_callback_token(settings, "laku-callback-tokem")
    assert not verify_callback_token(settings, "laku-callback-token-longer")
    assert not verify_callback_token(settings, "")
    assert not verify_callback_token(settings, None)
    assert not verify_callback_token(settings, "tökén")
