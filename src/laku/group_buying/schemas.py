import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import Field, RootModel

from laku.core.schemas import WireModel

# Strict: "4" or 1.5 are refused rather than coerced.
UnitsInBundle = Annotated[int, Field(strict=True, gt=0, le=1_000_000)]
MAX_VARIANTS_PER_BUNDLE = 100


class BundleItemIn(WireModel):
    variant_id: uuid.UUID
    units_in_bundle: UnitsInBundle


class ProductBundleItemIn(BundleItemIn):
    """An item of the seed's step 1.3 list, which names the product on every item."""

    product_id: uuid.UUID


class BundleCompositionCreate(RootModel[list[ProductBundleItemIn]]):
    """A product's whole composition; every item names the same product."""

    root: Annotated[
        list[ProductBundleItemIn], Field(min_length=1, max_length=MAX_VARIANTS_PER_BUNDLE)
    ]


class BundleCompositionReplace(RootModel[list[BundleItemIn]]):
    """A product's whole composition; the product is named by the path."""

    root: Annotated[list[BundleItemIn], Field(min_length=1, max_length=MAX_VARIANTS_PER_BUNDLE)]


class BundleItemOut(WireModel):
    variant_id: uuid.UUID
    units_in_bundle: int


class BundleCompositionOut(WireModel):
    product_id: uuid.UUID
    units_per_bundle: int = Field(description="Units in one bundle: the sum over its variants.")
    items: list[BundleItemOut] = Field(description="Ordered by variantId.")


class PaymentEventStatus(StrEnum):
    PAID = "paid"
    EXPIRED = "expired"
    FAILED = "failed"


class PaymentEvent(WireModel):
    """What payment-service reports about a participant's payment (after a Xendit webhook)."""

    reference: Annotated[str, Field(min_length=1, max_length=200)]  # "participant:<uuid>"
    payment_id: uuid.UUID
    status: PaymentEventStatus
    occurred_at: datetime
