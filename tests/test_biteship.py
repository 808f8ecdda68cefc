"""Biteship API client against the sandbox process, and the sandbox's status flow and webhooks."""

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from laku.core.services import service_url
from laku.core.settings import Settings
from laku.providers.biteship.client import (
    WEBHOOK_SECRET_HEADER,
    BiteshipClient,
    BiteshipError,
    BiteshipOrder,
    Contact,
    RateItem,
    verify_webhook_secret,
)
from laku.providers.biteship.sandbox import COURIERS, RETRY_DELAYS_SECONDS, shipping_price
from laku.testing.platform import Platform
from tests.support import WebhookAttempt, sandbox_webhook_attempts, wait_for_sandbox_webhooks

Attempt = WebhookAttempt

WAREHOUSE = Contact(
    name="Gudang Laku Jakarta",
    phone="+6281100000000",
    address="Jl. Gatot Subroto Kav. 18, Jakarta Selatan",
    postal_code="12190",
)
BUYER = Contact(
    name="Siti Aminah",
    phone="+6281234567890",
    address="Jl. Soekarno-Hatta 1, Bandung, Jawa Barat 40123",
    postal_code="40123",
    note="Pagar hijau",
)
# 5 units of 300 g: 1.5 kg, charged as 2 kg.
ITEMS = [
    RateItem(name="Premium T-Shirt (Medium)", value=65_000, quantity=3, weight=300),
    RateItem(name="Premium T-Shirt (Small)", value=65_000, quantity=2, weight=300),
]


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5.0) as client:
        yield client


@pytest.fixture
def biteship(platform: Platform, http: httpx.AsyncClient) -> BiteshipClient:
    return BiteshipClient(http, platform.settings)


async def new_order(biteship: BiteshipClient, **fields: Any) -> BiteshipOrder:
    return await biteship.create_order(
        **{
            "reference_id": "order-1",
            "origin": WAREHOUSE,
            "destination": BUYER,
            "courier_company": "jne",
            "courier_type": "reg",
            "items": ITEMS,
            **fields,
        }
    )


def sandbox(platform: Platform) -> httpx.Client:
    return platform.client("biteship-sandbox")


def webhook_attempts(platform: Platform, order_id: str) -> list[Attempt]:
    return sandbox_webhook_attempts(sandbox(platform), orderId=order_id)


async def wait_for_attempts(
    platform: Platform,
    order_id: str,
    until: Callable[[list[Attempt]], bool],
    timeout_seconds: float = 5.0,
) -> list[Attempt]:
    return await wait_for_sandbox_webhooks(
        sandbox(platform), until, timeout_seconds, orderId=order_id
    )


# --- rates ----------------------------------------------------------------------------------


def test_the_sandbox_price_formula() -> None:
    """Per kilogram (rounded up) the service's rate plus a surcharge per postal region
    crossed: Jakarta (1) to Bandung (4) is three regions."""
    jne_reg = COURIERS["jne"].services["reg"]
    assert shipping_price(jne_reg, "12190", "40123", 1500) == (9_000 + 3 * 2_000) * 2
    assert shipping_price(jne_reg, "12190", "12950", 1) == 9_000  # same region, at least 1 kg
    assert shipping_price(jne_reg, "40123", "12190", 2000) == 30_000  # either way round


async def test_rates_price_every_service_of_the_asked_couriers(biteship: BiteshipClient) -> None:
    pricing = await biteship.rates(
        origin_postal_code="12190",
        destination_postal_code="40123",
        couriers=["jne", "sicepat", "unknown"],
        items=ITEMS,
    )

    assert [(rate.courier_code, rate.courier_service_code, rate.price) for rate in pricing] == [
        ("jne", "reg", 30_000),
        ("jne", "yes", 54_000),
        ("sicepat", "reg", 25_000),
        ("sicepat", "best", 45_000),
    ]
    [reg, *_] = pricing
    assert (reg.courier_name, reg.courier_service_name) == ("JNE", "Reguler")
    assert (reg.duration, reg.shipment_duration_range, reg.shipment_duration_unit) == (
        "2 - 3 days",
        "2 - 3",
        "days",
    )


async def test_rates_for_no_known_courier_are_refused(biteship: BiteshipClient) -> None:
    with pytest.raises(BiteshipError) as refused:
        await biteship.rates(
            origin_postal_code="12190",
            destination_postal_code="40123",
            couriers=["pos"],
            items=ITEMS,
        )
    assert (refused.value.status, refused.value.code) == (400, 40001010)


async def test_a_wrong_api_key_is_refused(platform: Platform, http: httpx.AsyncClient) -> None:
    settings = platform.settings.model_copy(
        update={"biteship_api_key": SecretStr("biteship_test.not-ours")}
    )
    with pytest.raises(BiteshipError) as refused:
        await BiteshipClient(http, settings).rates(
            origin_postal_code="12190",
            destination_postal_code="40123",
            couriers=["jne"],
            items=ITEMS,
        )
    assert (refused.value.status, refused.value.code) == (401, 40101001)
    assert "Authorization failed" in refused.value.message


async def test_an_unreachable_biteship_is_an_error_without_status(
    platform: Platform, http: httpx.AsyncClient
) -> None:
    settings = platform.settings.model_copy(update={"biteship_api_base_url": "http://127.0.0.1:9"})
    with pytest.raises(BiteshipError) as failed:
        await BiteshipClient(http, settings).get_order("0" * 24)
    assert (failed.value.status, failed.value.code) == (None, None)


# --- orders and tracking --------------------------------------------------------------------


async def test_an_order_books_a_waybill_and_is_tracked(biteship: BiteshipClient) -> None:
    order = await new_order(biteship, reference_id="order-42")

    assert len(order.id) == 24 and int(order.id, 16) >= 0
    assert (order.reference_id, order.status, order.price) == ("order-42", "confirmed", 30_000)
    assert (order.courier.company, order.courier.type) == ("jne", "reg")
    assert order.courier.waybill_id and order.courier.waybill_id.startswith("JNE")
    assert order.courier.tracking_id and len(order.courier.tracking_id) == 24
    assert await biteship.get_order(order.id) == order

    tracking = await biteship.get_tracking(order.courier.tracking_id)
    assert (tracking.id, tracking.waybill_id, tracking.order_id, tracking.status) == (
        order.courier.tracking_id,
        order.courier.waybill_id,
        order.id,
        "confirmed",
    )
    assert [(h.status, h.note) for h in tracking.history] == [
        ("confirmed", "Order is ready to be confirmed. AWB has been generated.")
    ]


async def test_an_order_of_an_unknown_courier_service_is_refused(
    biteship: BiteshipClient,
) -> None:
    with pytest.raises(BiteshipError) as refused:
        await new_order(biteship, courier_type="ez")  # J&T's, not JNE's
    assert (refused.value.status, refused.value.code) == (400, 40002030)


def test_an_order_missing_what_biteship_requires_gets_its_code(platform: Platform) -> None:
    body = {
        "origin_contact_name": "Gudang",
        "origin_contact_phone": "+6281100000000",
        "origin_address": "Jl. Gatot Subroto",
        "origin_postal_code": 12190,
        "destination_contact_name": "Siti",
        "destination_contact_phone": "+6281234567890",
        "destination_postal_code": 40123,
        "courier_company": "jne",
        "courier_type": "reg",
        "delivery_type": "now",
        "items": [{"name": "Kaos", "value": 65000, "quantity": 1, "weight": 300}],
    }
    headers = {"Authorization": platform.settings.biteship_api_key.get_secret_value()}
    refused = sandbox(platform).post("/v1/orders", json=body, headers=headers)
    assert refused.status_code == 400
    assert refused.json() == {
        "success": False,
        "error": "Please make sure destination address is filled",
        "code": 40002019,
    }
    wrong_type = {**body, "destination_address": "Jl. Soekarno-Hatta 1", "delivery_type": "later"}
    refused = sandbox(platform).post("/v1/orders", json=wrong_type, headers=headers)
    assert (refused.status_code, refused.json()["code"]) == (400, 40002006)


async def test_unknown_orders_and_trackings_are_404(biteship: BiteshipClient) -> None:
    for call in (biteship.get_order, biteship.get_tracking):
        with pytest.raises(BiteshipError) as refused:
            await call("0" * 24)
        assert refused.value.status == 404


# --- status flow and webhooks ---------------------------------------------------------------


async def test_advancing_walks_the_flow_and_sends_each_status_webhook(
    platform: Platform, biteship: BiteshipClient
) -> None:
    order = await new_order(biteship)
    flow = ["allocated", "picking_up", "picked", "dropping_off", "delivered"]
    for status in flow:
        advanced = sandbox(platform).post(f"/sandbox/orders/{order.id}/advance")
        assert advanced.status_code == 200, advanced.text
        assert advanced.json()["status"] == status
    refused = sandbox(platform).post(f"/sandbox/orders/{order.id}/advance")
    assert (refused.status_code, refused.json()["success"]) == (409, False)

    attempts = await wait_for_attempts(
        platform, order.id, lambda a: sum(x["delivered"] for x in a) == len(flow)
    )
    assert sorted(a["payload"]["status"] for a in attempts) == sorted(flow)
    tracking = await biteship.get_tracking(str(order.courier.tracking_id))
    assert [h.status for h in tracking.history] == ["confirmed", *flow]
    history_times = {h.status: h.updated_at for h in tracking.history}
    for attempt in attempts:
        payload = attempt["payload"]
        assert (
            attempt["url"] == f"{service_url('logistics', platform.settings)}/api/shipments/webhook"
        )
        assert attempt["headers"] == {
            WEBHOOK_SECRET_HEADER: platform.settings.biteship_webhook_secret.get_secret_value()
        }
        assert attempt["responseStatus"] == 200  # logistics acknowledges an order not its own
        assert {
            key: payload[key] for key in list(payload) if key != "status" and key != "updated_at"
        } == {
            "event": "order.status",
            "courier_tracking_id": order.courier.tracking_id,
            "courier_waybill_id": order.courier.waybill_id,
            "courier_company": "jne",
            "courier_type": "reg",
            "courier_driver_name": None,
            "courier_driver_phone": None,
            "courier_driver_photo_url": None,
            "courier_driver_plate_number": None,
            "courier_link": None,
            "order_id": order.id,
            "order_price": 30_000,
        }
        # The webhook's time is the status's time in the tracking history.
        assert datetime.fromisoformat(payload["updated_at"]) == history_times[payload["status"]]
    assert (await biteship.get_order(order.id)).status == "delivered"


async def test_setting_a_status_sends_its_webhook_once(
    platform: Platform, biteship: BiteshipClient
) -> None:
    order = await new_order(biteship)
    for _ in range(2):  # the second time the order has it already: no webhook
        held = sandbox(platform).post(
            f"/sandbox/orders/{order.id}/status", json={"status": "on_hold"}
        )
        assert (held.status_code, held.json()["status"]) == (200, "on_hold")
    unknown = sandbox(platform).post(f"/sandbox/orders/{order.id}/status", json={"status": "lost"})
    assert unknown.status_code == 400
    off_the_flow = sandbox(platform).post(f"/sandbox/orders/{order.id}/advance")
    assert off_the_flow.status_code == 409

    resent = sandbox(platform).post(f"/sandbox/orders/{order.id}/resend-webhook")
    assert resent.status_code == 200
    attempts = await wait_for_attempts(platform, order.id, lambda a: len(a) == 2)
    await asyncio.sleep(0.2)  # nothing else follows
    attempts = webhook_attempts(platform, order.id)
    assert [a["payload"]["status"] for a in attempts] == ["on_hold", "on_hold"]
    assert attempts[0]["delivery"] != attempts[1]["delivery"]
    assert attempts[0]["payload"] == attempts[1]["payload"]
    assert order.id in {o["id"] for o in sandbox(platform).get("/sandbox/orders").json()}


async def test_webhooks_are_retried_with_back_off_until_logistics_answers(
    platform: Platform, biteship: BiteshipClient
) -> None:
    order = await new_order(biteship)
    platform.supervisor.stop("logistics")
    try:
        sandbox(platform).post(f"/sandbox/orders/{order.id}/advance").raise_for_status()
        failed = await wait_for_attempts(platform, order.id, lambda a: len(a) >= 2)
    finally:
        platform.supervisor.start_one("logistics")
        platform.supervisor.wait_ready()

    for attempt in failed:
        assert attempt["responseStatus"] is None
        assert "Connect" in attempt["error"]
        assert not attempt["delivered"]
    answered = await wait_for_attempts(
        platform,
        order.id,
        lambda a: a[-1]["delivered"],
        timeout_seconds=sum(RETRY_DELAYS_SECONDS[:4]) + 2,
    )
    assert {a["delivery"] for a in answered} == {failed[0]["delivery"]}
    assert [a["attempt"] for a in answered] == list(range(1, len(answered) + 1))
    assert answered[-1]["payload"] == failed[0]["payload"]
    sent_at = [datetime.fromisoformat(a["at"]) for a in answered]
    gaps = [later - earlier for earlier, later in itertools.pairwise(sent_at)]
    for gap, delay in zip(gaps, RETRY_DELAYS_SECONDS, strict=False):
        assert gap >= timedelta(seconds=delay * 0.9)


def test_verify_webhook_secret() -> None:
    settings = Settings(biteship_webhook_secret=SecretStr("laku-biteship-secret"))
    assert verify_webhook_secret(settings, "laku-biteship-secret")
    assert not verify_webhook_secret(settings, "laku-biteship-secreT")
    assert not verify_webhook_secret(settings, "laku-biteship-secret-longer")
    assert not verify_webhook_secret(settings, "")
    assert not verify_webhook_secret(settings, None)
