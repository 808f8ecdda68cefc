import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AwareDatetime, Field, RootModel

from laku.core.money import Rupiah, SignedRupiah
from laku.core.schemas import Text, WireModel
from laku.group_buying.rules import (
    AvailabilityStatus,
    CloseOutcome,
    ParticipantStatus,
    PaymentEventStatus,
    SessionStatus,
    Tier,
)

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


class PaymentEvent(WireModel):
    """What payment-service reports about a participant's payment (after a Xendit webhook)."""

    reference: Text(200)  # "participant:<uuid>"
    payment_id: uuid.UUID
    status: PaymentEventStatus
    occurred_at: datetime


# Sessions ------------------------------------------------------------------------------------

TierPrice = Annotated[Rupiah, Field(gt=0)]
TargetMoq = Annotated[int, Field(strict=True, gt=0, le=1_000_000)]
MAX_JOIN_QUANTITY = 10_000
JoinQuantity = Annotated[int, Field(strict=True, gt=0, le=MAX_JOIN_QUANTITY)]


class SessionCreate(WireModel):
    """Seed step 2. `groupPrice` is the opening price, so it may be left out; sent, it must
    equal `priceTier25`."""

    product_id: uuid.UUID
    factory_id: uuid.UUID
    target_moq: TargetMoq
    group_price: TierPrice | None = None
    price_tier_25: TierPrice
    price_tier_50: TierPrice
    price_tier_75: TierPrice
    price_tier_100: TierPrice
    end_time: AwareDatetime
    estimated_completion_date: AwareDatetime


class SessionVariantOut(WireModel):
    variant_id: uuid.UUID
    sku: str
    variant_name: str
    price_adjustment: SignedRupiah = Field(
        description="The variant's catalog price adjustment; group-buy prices do not add it."
    )
    unit_price: Rupiah = Field(description="A join's unit price now: the current tier's price.")


class SessionOut(WireModel):
    id: uuid.UUID
    session_code: str
    product_id: uuid.UUID
    factory_id: uuid.UUID
    product_name: str
    target_moq: int
    group_price: Rupiah
    price_tier_25: Rupiah
    price_tier_50: Rupiah
    price_tier_75: Rupiah
    price_tier_100: Rupiah
    end_time: datetime
    estimated_completion_date: datetime
    status: SessionStatus
    paid_quantity: int = Field(description="Units paid for by participants.")
    buyer_count: int = Field(description="Buyers with a paid place in it (each counted once).")
    fill_basis_points: int = Field(
        description="paidQuantity / targetMoq in basis points (10000 = the MOQ), rounded down; "
        "above 10000 once the group outgrows its MOQ."
    )
    quantity_to_moq: int = Field(description="Paid units still missing to reach the MOQ.")
    current_tier: Tier = Field(description="The tier a join is priced at now.")
    current_unit_price: Rupiah = Field(description="The current tier's price, for every variant.")
    joinable: bool = Field(description="Open for joins: forming/active/moq_reached before endTime.")
    variants: list[SessionVariantOut]
    created_at: datetime
    cancelled_at: datetime | None


# Participants --------------------------------------------------------------------------------


class JoinRequest(WireModel):
    """Seed step 3. `userId` may be left out (the token says who joins); `unitPrice` and
    `totalPrice` too, and when sent they must equal the server's price."""

    user_id: uuid.UUID | None = None
    quantity: JoinQuantity
    variant_id: uuid.UUID
    unit_price: Rupiah | None = None
    total_price: Rupiah | None = None


MAX_PARTICIPANTS_PAGE = 5_000


class ParticipantOut(WireModel):
    id: uuid.UUID
    session_id: uuid.UUID
    session_code: str
    user_id: uuid.UUID
    variant_id: uuid.UUID
    quantity: int
    unit_price: Rupiah
    total_price: Rupiah
    final_unit_price: Rupiah | None = Field(
        description="The unit price at the session's final tier, set when it closes."
    )
    status: ParticipantStatus
    reservation_reference: str
    payment_id: uuid.UUID | None
    payment_url: str | None
    paid_at: datetime | None
    cancelled_at: datetime | None
    cancel_reason: str | None
    created_at: datetime


class JoinOut(WireModel):
    participant: ParticipantOut
    payment_url: str = Field(description="The Xendit invoice page where the buyer pays.")


class ParticipationOut(ParticipantOut):
    """A buyer's own participation, with what it needs to show it."""

    product_name: str
    variant_name: str
    session_status: SessionStatus
    session_end_time: datetime


class PaymentEventOut(WireModel):
    reference: str
    outcome: Literal["applied", "ignored", "unknown"] = Field(
        description="`ignored`: a duplicate or a late event; nothing changed. `unknown`: the "
        "reference names no participant (money paid for it is nobody's here: give it back)."
    )
    participant_status: ParticipantStatus | None


class VariantAvailabilityOut(WireModel):
    variant_id: uuid.UUID
    sku: str
    variant_name: str
    available_quantity: int
    status: AvailabilityStatus
    can_join: bool = Field(description="The session is joinable and stock is available.")
    unit_price: Rupiah


class SessionAvailabilityOut(WireModel):
    session_id: uuid.UUID
    session_code: str
    joinable: bool
    variants: list[VariantAvailabilityOut]


# Closing ------------------------------------------------------------------------------------


class ClosedSessionOut(WireModel):
    session_id: uuid.UUID
    session_code: str
    outcome: CloseOutcome
    error: str | None = Field(
        default=None, description="Why an `unfinished` close stopped (a problem code)."
    )


class ProcessExpiredOut(WireModel):
    processed: list[ClosedSessionOut]
    more: bool = Field(
        description="The run stopped at its limit of sessions: call again for the rest."
    )


class AuditParticipantOut(WireModel):
    """A live participant as `laku audit` compares it with its hold and its payment."""

    id: uuid.UUID
    reference: str
    status: ParticipantStatus
    quantity: int
    total_price: int
    payment_id: uuid.UUID | None
    updated_at: datetime
