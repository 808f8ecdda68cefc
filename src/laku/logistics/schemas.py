import uuid
from datetime import datetime, timedelta, timezone
from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from laku.core.money import Rupiah
from laku.core.schemas import ProviderModel, Text, WireModel

PostalCode = Annotated[str, Field(pattern=r"^[0-9]{5}$", examples=["12190"])]
CourierCode = Annotated[str, Field(pattern=r"^[a-z0-9_]{1,32}$", examples=["jne"])]
DEFAULT_COURIERS = ["jne", "jnt", "sicepat"]


class RatesRequest(WireModel):
    """Seed step 9.1. The postal codes are the server's to work out (the warehouse, the buyer's
    address); when sent they must match it."""

    order_id: uuid.UUID
    origin_postal_code: PostalCode | None = None
    destination_postal_code: PostalCode | None = None
    couriers: Annotated[list[CourierCode], Field(min_length=1, max_length=10)] = Field(
        default_factory=lambda: list(DEFAULT_COURIERS)
    )
    address_id: uuid.UUID | None = Field(
        default=None, description="One of the buyer's addresses; their default address if omitted."
    )


class RateOut(WireModel):
    courier_company: str = Field(description="What a shipment names as `courierCompany`.")
    courier_name: str
    courier_type: str = Field(description="What a shipment names as `courierType`.")
    courier_service_name: str
    description: str | None
    duration: str | None = Field(examples=["2 - 3 days"])
    price: Rupiah


class RatesOut(WireModel):
    order_id: uuid.UUID
    address_id: uuid.UUID
    origin_postal_code: str
    destination_postal_code: str
    weight_grams: int = Field(description="Units in the order x the weight of one unit.")
    rates: list[RateOut]


class ShipmentCreate(WireModel):
    """Seed step 9.2: book the courier for an order (which must be `processing`)."""

    order_id: uuid.UUID
    courier_company: CourierCode
    courier_type: CourierCode = Field(examples=["reg"])
    address_id: uuid.UUID | None = Field(
        default=None, description="One of the buyer's addresses; their default address if omitted."
    )


class BulkShipmentsCreate(WireModel):
    """Book the shipments of a group buy whose goods are in hand (warehouse asks)."""

    group_session_id: uuid.UUID


class ParcelOut(WireModel):
    biteship_order_id: str
    tracking_number: str | None
    courier_company: str
    courier_type: str
    price: Rupiah
    order_ids: list[uuid.UUID] = Field(description="The orders travelling in the parcel.")


class UnbookedOrderOut(WireModel):
    order_id: uuid.UUID
    code: str = Field(examples=["no_delivery_address"])
    detail: str


class BulkShipmentsOut(WireModel):
    group_session_id: uuid.UUID
    parcels: list[ParcelOut] = Field(description="The parcels this call booked.")
    booked: int = Field(description="Orders this call booked.")
    existing: int = Field(description="Ready orders booked before.")
    unbooked: list[UnbookedOrderOut] = Field(
        description="Ready orders that could not be booked (no address, refused by Biteship)."
    )


class TrackingEventOut(WireModel):
    status: str
    note: str
    occurred_at: datetime


class ShipmentOut(WireModel):
    id: uuid.UUID
    order_id: uuid.UUID
    user_id: uuid.UUID
    biteship_order_id: str | None
    tracking_number: str | None = Field(description="The courier's waybill.")
    courier_company: str
    courier_type: str
    price: Rupiah | None
    status: str = Field(
        description="`creating` while being booked, then Biteship's status (`confirmed`, "
        "`allocated`, `picking_up`, `picked`, `dropping_off`, `delivered`...)."
    )
    status_at: datetime
    origin_postal_code: str
    destination_address_id: uuid.UUID
    destination_name: str
    destination_phone: str
    destination_address: str
    destination_postal_code: str
    destination_note: str | None
    created_at: datetime
    updated_at: datetime


class ShipmentDetailOut(ShipmentOut):
    events: list[TrackingEventOut] = Field(description="What Biteship reported, oldest first.")


_WIB = timezone(timedelta(hours=7), "WIB")


def _in_wib_unless_zoned(moment: datetime | None) -> datetime | None:
    """Biteship's times carry their offset (+07:00); one without is read as Jakarta time."""
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=_WIB)
    return moment


class BiteshipWebhook(ProviderModel):
    """Biteship's webhook body as it sends it (snake_case). Every field is optional: Biteship
    also posts an empty body when the webhook URL is saved in its dashboard."""

    event: Text(100) | None = None
    order_id: Text(100) | None = None
    status: Text(100) | None = None
    courier_tracking_id: Text(100) | None = None
    courier_waybill_id: Text(100) | None = None
    courier_company: Text(100) | None = None
    courier_type: Text(100) | None = None
    updated_at: Annotated[datetime | None, AfterValidator(_in_wib_unless_zoned)] = None


class WebhookAck(WireModel):
    status: Literal["processed", "duplicate", "ignored"]
