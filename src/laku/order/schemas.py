import uuid
from datetime import datetime

from pydantic import Field

from laku.core.money import Rupiah
from laku.core.schemas import Text, WireModel
from laku.order.rules import OrderStatus


class OrderShip(WireModel):
    """The courier has the parcel (logistics-service, from Biteship's status webhook)."""

    tracking_number: Text(100)
    courier: Text(100)


class CourierChoice(WireModel):
    """The courier service the buyer wants the parcel booked with (Biteship's codes, as in the
    rates: `courierCompany` jne, `courierType` reg)."""

    courier_company: Text(32, examples=["jne"])
    courier_type: Text(32, examples=["reg"])


class SessionReadyOut(WireModel):
    group_session_id: uuid.UUID
    marked: int = Field(description="Orders this call made ready to ship.")
    ready: int = Field(description="The session's processing orders now ready to ship.")


class OrderCancel(WireModel):
    reason: Text(1000)


class BulkOrdersCreate(WireModel):
    """Seed step 6: one order for each paid participant of a successful group buy."""

    group_session_id: uuid.UUID


class BulkOrdersOut(WireModel):
    group_session_id: uuid.UUID
    created: int = Field(description="Orders this call created.")
    existing: int = Field(description="Paid participants whose order an earlier call created.")
    total: int = Field(description="Paid participants of the session, each with one order.")


class ProductSnapshot(WireModel):
    """The product as it was when the order was created; later catalogue edits leave it be."""

    sku: str
    name: str
    factory_id: uuid.UUID
    variant_id: uuid.UUID
    variant_sku: str
    variant_name: str
    image_url: str | None = Field(description="The product's first image, if it had one.")


class OrderItemOut(WireModel):
    id: uuid.UUID
    variant_id: uuid.UUID
    sku: str
    name: str
    quantity: int
    unit_price: Rupiah
    total_price: Rupiah


class OrderOut(WireModel):
    id: uuid.UUID
    order_number: str = Field(description='"ORD-<yyyymmdd>-<n>", the date in UTC.')
    group_session_id: uuid.UUID
    participant_id: uuid.UUID
    user_id: uuid.UUID
    payment_id: uuid.UUID
    product_id: uuid.UUID
    product_snapshot: ProductSnapshot
    status: OrderStatus
    subtotal: Rupiah = Field(description="Quantity x the final unit price of the group buy.")
    items: list[OrderItemOut]
    tracking_number: str | None = Field(description="The courier's waybill, once shipped.")
    courier: str | None
    ready_to_ship_at: datetime | None = Field(
        description="When the goods were in hand; a courier is booked only after it."
    )
    courier_choice: CourierChoice | None = Field(
        description="The buyer's courier; none: the cheapest configured one is booked."
    )
    shipped_at: datetime | None
    delivered_at: datetime | None
    cancelled_at: datetime | None
    cancel_reason: str | None
    created_at: datetime
    updated_at: datetime


class SessionOrdersSummaryOut(WireModel):
    group_session_id: uuid.UUID
    orders: int
    units: int = Field(description="Units over all of the session's orders.")
    subtotal: Rupiah = Field(description="Sum of the orders' subtotals.")
    by_status: dict[OrderStatus, int] = Field(description="Orders per status, every status listed.")
