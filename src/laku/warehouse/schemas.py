import uuid
from datetime import date, datetime
from typing import Annotated

from pydantic import AwareDatetime, Field, RootModel, model_validator

from laku.core.money import Rupiah
from laku.core.schemas import Text, WireModel
from laku.warehouse.rules import FulfilmentStatus, StockStatus, WarehouseInvoiceStatus

Units = Annotated[int, Field(strict=True, ge=0, le=10**9)]
PositiveUnits = Annotated[int, Field(strict=True, gt=0, le=10**9)]
Reference = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9:_\-.]+$")]


class InventoryCreate(WireModel):
    product_id: uuid.UUID
    variant_id: uuid.UUID
    quantity: Units
    max_stock_level: PositiveUnits
    reorder_threshold: Units

    @model_validator(mode="after")
    def _levels(self) -> "InventoryCreate":
        if self.reorder_threshold >= self.max_stock_level:
            raise ValueError("reorderThreshold must be below maxStockLevel")
        if self.quantity > self.max_stock_level:
            raise ValueError("quantity may not exceed maxStockLevel")
        return self


class InventoryBatch(RootModel[list[InventoryCreate]]):
    """Seed step 1.4: the variants of one product, created together or not at all."""

    root: Annotated[list[InventoryCreate], Field(min_length=1, max_length=100)]


class InventoryOut(WireModel):
    id: uuid.UUID
    product_id: uuid.UUID
    variant_id: uuid.UUID
    factory_id: uuid.UUID
    quantity: int
    reserved_quantity: int
    available_quantity: int
    max_stock_level: int
    reorder_threshold: int
    surplus_quantity: int
    status: StockStatus
    updated_at: datetime


class ProductStockOut(WireModel):
    product_id: uuid.UUID
    status: StockStatus = Field(description="The worst status of its variants")
    variants: list[InventoryOut]


class ReservationCreate(WireModel):
    reference: Reference
    variant_id: uuid.UUID
    quantity: PositiveUnits
    group: Reference | None = Field(
        default=None, description='What the reservation belongs to, e.g. "session:<id>"'
    )
    expires_at: AwareDatetime | None = Field(
        default=None,
        description="When the hold lapses unless confirmed; at most (and by default) the "
        "warehouse's longest hold from now",
    )


class ReservationOut(WireModel):
    reference: str
    variant_id: uuid.UUID | None = Field(description="null: released before it was reserved")
    quantity: int
    status: str = Field(description="reserved | released | deducted | void (released unknown)")
    available_quantity: int | None = Field(
        description="The variant's available stock afterwards (null for a void reference)"
    )
    expires_at: datetime | None = Field(
        default=None, description="When the hold lapses; null once confirmed or no longer held"
    )
    confirmed: bool = False


class AdjustmentCreate(WireModel):
    delta: Annotated[int, Field(strict=True, ge=-(10**9), le=10**9)]
    reason: Text(500)

    @model_validator(mode="after")
    def _not_zero(self) -> "AdjustmentCreate":
        if self.delta == 0:
            raise ValueError("delta must not be zero")
        return self


class MovementOut(WireModel):
    id: int
    variant_id: uuid.UUID
    kind: str
    quantity_delta: int
    reserved_delta: int
    reference: str | None
    reason: str | None
    created_at: datetime


class LedgerCheckOut(WireModel):
    """On-hand and reserved stock against the sums of the movement ledger."""

    variant_id: uuid.UUID
    quantity: int
    ledger_quantity: int
    reserved_quantity: int
    ledger_reserved: int
    surplus_quantity: int
    ledger_surplus: int
    consistent: bool


class PurchaseOrderLineOut(WireModel):
    variant_id: uuid.UUID
    units_in_bundle: int
    quantity: int


class PurchaseOrderOut(WireModel):
    id: uuid.UUID
    number: str
    factory_id: uuid.UUID
    product_id: uuid.UUID
    reason: str
    bundles: int
    unit_cost: Rupiah
    goods_cost: Rupiah
    shipping_cost: Rupiah
    total_cost: Rupiah
    status: str
    tracking_number: str | None
    shipped_at: datetime | None
    received_at: datetime | None
    cancelled_at: datetime | None
    created_at: datetime
    lines: list[PurchaseOrderLineOut]


class WarehouseInvoiceOut(WireModel):
    id: uuid.UUID
    number: str = Field(description='"INV-WH-<yyyymmdd>-<n>", the date in UTC.')
    purchase_order_id: uuid.UUID
    group_session_id: uuid.UUID | None = Field(
        description="The group buy whose shortage the purchase order covered, if any."
    )
    factory_id: uuid.UUID
    units: int
    unit_cost: Rupiah
    goods_amount: Rupiah = Field(description="Units x unit cost.")
    shipping_amount: Rupiah = Field(description="The purchase order's inbound shipping.")
    tax_rate_bps: int = Field(description="PPN in basis points (1100 = 11%).")
    tax_amount: Rupiah = Field(description="PPN on goods and shipping, rounded half up.")
    total_amount: Rupiah
    due_date: date
    status: WarehouseInvoiceStatus
    payment_reference: str | None
    paid_at: datetime | None
    created_at: datetime


class InvoicePayment(WireModel):
    """How the invoice was paid (the bank transfer's reference)."""

    payment_reference: Text(100)


class ShipmentNotice(WireModel):
    tracking_number: Text(100)


class GroupRelease(WireModel):
    references: Annotated[list[Reference], Field(max_length=20_000)] | None = Field(
        default=None, description="Only these reservations of the group; all when absent"
    )


MAX_REFERENCES_PER_CALL = 5_000


class GroupConfirm(WireModel):
    references: Annotated[
        list[Reference], Field(min_length=1, max_length=MAX_REFERENCES_PER_CALL)
    ] = Field(description="The group's paid reservations (send a larger group in chunks)")


class GroupConfirmOut(WireModel):
    group: str
    confirmed: int = Field(description="Holds this call confirmed")
    restored: int = Field(
        description="Of those, holds that had lapsed and were reserved again (stock may fall "
        "short, which the fulfilment then orders)"
    )
    unknown: list[str] = Field(description="Named references with no reservation in the group")


class GroupReleaseOut(WireModel):
    group: str
    released: int = Field(description="Reservations released by this call")
    units: int


class FulfilmentCreate(WireModel):
    product_id: uuid.UUID


class FulfilmentOut(WireModel):
    group: str
    product_id: uuid.UUID
    status: FulfilmentStatus
    units: int = Field(description="Units taken (or to be taken) out of stock")
    purchase_order_id: uuid.UUID | None
    fulfilled_at: datetime | None


class AuditReservationOut(WireModel):
    """A reservation as `laku audit` compares it with its participant."""

    reference: str
    status: str
    quantity: int
    updated_at: datetime
