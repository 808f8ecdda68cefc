"""The Xendit sandbox speaks Xendit's contract as Xendit's official Python SDK (xendit-python)
reads it: the SDK, pointed at the sandbox with the sandbox's secret key, creates, reads, lists
and expires invoices and creates and reads payouts, each answered directly (no redirect) and
every answer deserialised into the SDK's own models, which check required fields and enums."""

import uuid
from collections.abc import Iterator

import httpx
import pytest
import urllib3
import xendit
from xendit.apis import InvoiceApi, PayoutApi
from xendit.invoice.model.create_invoice_request import CreateInvoiceRequest
from xendit.invoice.model.invoice import Invoice
from xendit.payout.model.create_payout_request import CreatePayoutRequest
from xendit.payout.model.digital_payout_channel_properties import DigitalPayoutChannelProperties

from laku.testing.platform import Platform


@pytest.fixture(scope="module")
def sdk(platform: Platform) -> Iterator[xendit.ApiClient]:
    configuration = xendit.Configuration(
        host=platform.url("xendit-sandbox"),
        api_key=platform.settings.xendit_secret_key.get_secret_value(),
    )
    # A redirect is answered to the SDK as it is (and refused as an error), never followed.
    configuration.retries = urllib3.Retry(total=0, redirect=False)
    client = xendit.ApiClient(configuration)
    yield client
    client.close()


def _new_invoice(invoices: InvoiceApi, external_id: str, amount: int = 475_000) -> Invoice:
    return invoices.create_invoice(
        create_invoice_request=CreateInvoiceRequest(
            external_id=external_id,
            amount=float(amount),
            description="Premium T-Shirt M x 5",
            payer_email="siti@laku.id",
            invoice_duration=3600.0,
            currency="IDR",
        )
    )


def test_the_sdk_creates_reads_lists_and_expires_an_invoice(
    sdk: xendit.ApiClient, platform: Platform
) -> None:
    invoices = InvoiceApi(sdk)
    external_id = f"PAY-SDK-{uuid.uuid4().hex[:8].upper()}"

    created = _new_invoice(invoices, external_id)
    assert (created.external_id, created.amount, str(created.status)) == (
        external_id,
        475_000.0,
        "PENDING",
    )
    assert str(created.currency) == "IDR"
    assert created.invoice_url.startswith(platform.url("xendit-sandbox"))
    assert [str(bank.bank_code) for bank in created.available_banks]
    for listed in (
        created.available_retail_outlets,
        created.available_ewallets,
        created.available_qr_codes,
        created.available_direct_debits,
        created.available_paylaters,
    ):
        assert listed, "Xendit lists every channel type on an invoice"

    read = invoices.get_invoice_by_id(invoice_id=created.id)
    assert (read.id, read.external_id, str(read.status)) == (created.id, external_id, "PENDING")
    assert read.expiry_date == created.expiry_date

    another = _new_invoice(invoices, f"{external_id}-OTHER")
    listed = invoices.get_invoices(external_id=external_id)
    assert [invoice.id for invoice in listed] == [created.id]
    assert [i.id for i in invoices.get_invoices(external_id=another.external_id)] == [another.id]

    expired = invoices.expire_invoice(invoice_id=created.id)
    assert (expired.id, str(expired.status)) == (created.id, "EXPIRED")
    assert str(invoices.get_invoice_by_id(invoice_id=created.id).status) == "EXPIRED"
    assert [str(i.status) for i in invoices.get_invoices(external_id=external_id)] == ["EXPIRED"]


def test_the_sdk_reads_a_paid_invoice(sdk: xendit.ApiClient, platform: Platform) -> None:
    invoices = InvoiceApi(sdk)
    created = _new_invoice(invoices, f"PAY-SDK-{uuid.uuid4().hex[:8].upper()}", 95_000)
    paid = platform.client("xendit-sandbox").post(f"/sandbox/invoices/{created.id}/pay")
    assert paid.status_code == 200, paid.text

    read = invoices.get_invoice_by_id(invoice_id=created.id)
    assert str(read.status) == "PAID"
    assert str(read.payment_method) == "BANK_TRANSFER"
    # Fields the SDK's model does not name are kept as they are.
    assert read["paid_amount"] == 95_000
    assert read["paid_at"] is not None


def test_the_sdk_is_told_xendits_errors(sdk: xendit.ApiClient) -> None:
    with pytest.raises(xendit.XenditSdkException) as not_found:
        InvoiceApi(sdk).get_invoice_by_id(invoice_id="f" * 24)
    assert (not_found.value.status, not_found.value.errorCode) == ("404", "INVOICE_NOT_FOUND_ERROR")

    wrong_key = xendit.Configuration(host=sdk.configuration.host, api_key="xnd_development_wrong")
    with (
        xendit.ApiClient(wrong_key) as stranger,
        pytest.raises(xendit.XenditSdkException) as denied,
    ):
        InvoiceApi(stranger).get_invoice_by_id(invoice_id="f" * 24)
    assert (denied.value.status, denied.value.errorCode) == ("401", "INVALID_API_KEY")


def test_the_sdk_creates_and_reads_a_payout(sdk: xendit.ApiClient) -> None:
    payouts = PayoutApi(sdk)
    reference_id = f"sdk-{uuid.uuid4()}"
    request = CreatePayoutRequest(
        reference_id=reference_id,
        channel_code="ID_BCA",
        channel_properties=DigitalPayoutChannelProperties(
            account_number="1234567890", account_holder_name="Siti Rahayu"
        ),
        amount=40_000.0,
        currency="IDR",
        description="Laku wallet withdrawal",
    )

    created = payouts.create_payout(idempotency_key=reference_id, create_payout_request=request)
    assert (created.reference_id, created.amount, created.status) == (
        reference_id,
        40_000.0,
        "ACCEPTED",
    )
    assert created.channel_properties.account_number == "1234567890"
    again = payouts.create_payout(idempotency_key=reference_id, create_payout_request=request)
    assert again.id == created.id

    read = payouts.get_payout_by_id(id=created.id)
    assert (read.id, read.reference_id, read.status) == (created.id, reference_id, "ACCEPTED")
    page = payouts.get_payouts(reference_id=reference_id)
    assert [payout.id for payout in page.data] == [created.id]
    assert page.has_more is False


def test_both_invoice_paths_are_served_without_a_redirect(platform: Platform) -> None:
    secret = platform.settings.xendit_secret_key.get_secret_value()
    body = {"external_id": f"PAY-SDK-{uuid.uuid4().hex[:8].upper()}", "amount": 10_000}
    with httpx.Client(base_url=platform.url("xendit-sandbox"), auth=(secret, "")) as api:
        for path in ("/v2/invoices", "/v2/invoices/"):
            created = api.post(path, json=body)
            assert created.status_code == 200, (path, created.status_code, created.text)
            listed = api.get(path, params={"external_id": body["external_id"]})
            assert listed.status_code == 200, (path, listed.status_code)
        assert len(listed.json()) == 2
