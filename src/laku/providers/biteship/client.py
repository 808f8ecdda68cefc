"""Biteship API client: courier rates, orders (a courier booking with its waybill) and tracking.

As in Biteship's reference: `POST {base}/v1/rates/couriers`, `POST {base}/v1/orders`,
`GET {base}/v1/orders/{id}` and `GET {base}/v1/trackings/{id}`, authenticated by the API key
sent as it is in the `Authorization` header. A refusal is
`{"success": false, "error": "...", "code": 40002001}` with an HTTP status.

Biteship then reports every status change of an order by POSTing the `order.status` webhook to
the URL set in its dashboard. Biteship signs nothing: the dashboard lets the merchant add one
header to every webhook (its "signature key" and "signature secret"); Laku sets
`X-Biteship-Signature` to `biteship_webhook_secret`, which `verify_webhook_secret` checks.
"""

from datetime import datetime
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field

from laku.core.settings import Settings
from laku.providers.http import ProviderApi, ProviderError, api_base_url, refusal
from laku.providers.webhooks import secret_matches

WEBHOOK_SECRET_HEADER = "X-Biteship-Signature"

# Biteship's order statuses and what each means (its Order API overview).
ORDER_STATUSES: dict[str, str] = {
    "confirmed": "Order is ready to be confirmed. AWB has been generated.",
    "scheduled": "Order has been scheduled to be delivered.",
    "allocated": "Order has been allocated, courier will pickup the package.",
    "picking_up": "Courier is on the way to pickup the package.",
    "picked": "Package has been picked up by courier.",
    "cancelled": "Order has been cancelled.",
    "on_hold": "Order is on hold.",
    "dropping_off": "Courier is dropping off the package to the receiver.",
    "return_in_transit": "Package is on the transit for a return to sender.",
    "returned": "Package has been returned to sender.",
    "rejected": "Order has been rejected.",
    "disposed": "Package has been disposed.",
    "courier_not_found": "Cannot find courier for the order.",
    "delivered": "Package has been delivered to the receiver.",
}


class _BiteshipModel(BaseModel):
    """Named as in Biteship's JSON; fields Laku does not read are ignored."""

    model_config = ConfigDict(extra="ignore")


class RateItem(_BiteshipModel):
    name: str
    value: int = Field(description="Rupiah, per unit.")
    quantity: int
    weight: int = Field(description="Grams, per unit.")


class CourierRate(_BiteshipModel):
    """One courier service's price (`pricing[]` of the rates answer)."""

    courier_code: str  # what an order names as `courier_company`
    courier_name: str
    courier_service_code: str  # what an order names as `courier_type`
    courier_service_name: str
    description: str | None = None
    duration: str | None = None
    shipment_duration_range: str | None = None
    shipment_duration_unit: str | None = None
    service_type: str | None = None
    price: int


class CourierRates(_BiteshipModel):
    pricing: list[CourierRate]


class OrderCourier(_BiteshipModel):
    tracking_id: str | None = None
    waybill_id: str | None = None  # the courier's tracking number; a few issue it later
    company: str
    type: str
    link: str | None = None


class BiteshipOrder(_BiteshipModel):
    id: str
    reference_id: str | None = None
    status: str
    price: int
    courier: OrderCourier


class TrackingHistory(_BiteshipModel):
    note: str
    status: str
    updated_at: datetime


class BiteshipTracking(_BiteshipModel):
    id: str
    waybill_id: str | None = None
    order_id: str | None = None
    status: str
    history: list[TrackingHistory]


class Contact(_BiteshipModel):
    """Who hands over or receives the parcel, and where."""

    name: str
    phone: str
    address: str
    postal_code: str
    note: str | None = None


class BiteshipError(ProviderError):
    """Biteship refused the request (`status` and `code` set) or could not be reached or
    understood (`code` None; `status` None when nothing was answered)."""

    provider = "Biteship"

    def __init__(self, message: str, *, status: int | None = None, code: int | None = None):
        super().__init__(message, status=status)
        self.code = code


class BiteshipClient:
    """One request per call and no retries: the caller knows whether repeating is safe."""

    def __init__(self, http: httpx.AsyncClient, settings: Settings) -> None:
        self._api = ProviderApi(
            http,
            api_base_url(settings.biteship_api_base_url, "biteship-sandbox", settings),
            error=BiteshipError,
            refusal=_api_error,
            headers={"Authorization": settings.biteship_api_key.get_secret_value()},
        )

    async def rates(
        self,
        *,
        origin_postal_code: str,
        destination_postal_code: str,
        couriers: list[str],
        items: list[RateItem],
    ) -> list[CourierRate]:
        """Each requested courier's services and prices for the items between two postal codes."""
        body = {
            "origin_postal_code": int(origin_postal_code),
            "destination_postal_code": int(destination_postal_code),
            "couriers": ",".join(couriers),
            "items": [item.model_dump() for item in items],
        }
        answer = await self._api.read(
            "POST", "/v1/rates/couriers", CourierRates, "rates", json=body
        )
        return answer.pricing

    async def create_order(
        self,
        *,
        reference_id: str,
        origin: Contact,
        destination: Contact,
        courier_company: str,
        courier_type: str,
        items: list[RateItem],
    ) -> BiteshipOrder:
        """Book the courier to pick the parcel up now. Biteship does not deduplicate
        `reference_id`, so repeating this books a second courier."""
        body: dict[str, Any] = {
            "shipper_contact_name": origin.name,
            "shipper_contact_phone": origin.phone,
            "shipper_organization": origin.name,
            "origin_contact_name": origin.name,
            "origin_contact_phone": origin.phone,
            "origin_address": origin.address,
            "origin_note": origin.note,
            "origin_postal_code": int(origin.postal_code),
            "destination_contact_name": destination.name,
            "destination_contact_phone": destination.phone,
            "destination_address": destination.address,
            "destination_note": destination.note,
            "destination_postal_code": int(destination.postal_code),
            "courier_company": courier_company,
            "courier_type": courier_type,
            "delivery_type": "now",
            "reference_id": reference_id,
            "items": [item.model_dump() for item in items],
        }
        return await self._api.read("POST", "/v1/orders", BiteshipOrder, "order", json=body)

    async def get_order(self, order_id: str) -> BiteshipOrder:
        return await self._api.read("GET", f"/v1/orders/{order_id}", BiteshipOrder, "order")

    async def get_tracking(self, tracking_id: str) -> BiteshipTracking:
        """An order's tracking by its `courier.tracking_id`, with the status history."""
        return await self._api.read(
            "GET", f"/v1/trackings/{tracking_id}", BiteshipTracking, "tracking"
        )


def _api_error(response: httpx.Response) -> BiteshipError:
    """A refusal of any Biteship API: `{"success": false, "error", "code"}`."""
    return refusal(
        response, BiteshipError, lambda body: (body["error"], {"code": body.get("code")})
    )


def verify_webhook_secret(settings: Settings, received: str | None) -> bool:
    """Whether a webhook's `X-Biteship-Signature` is ours."""
    return secret_matches(received, settings.biteship_webhook_secret)
