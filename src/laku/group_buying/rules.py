"""Group-buying's status enums and pure rules: tier pricing (design 7) as integer arithmetic,
when a session takes joins, and how its participants are named to other services."""

import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import IntEnum, StrEnum
from typing import Protocol

from laku.core.money import BASIS_POINTS


class Tier(IntEnum):
    """A tier is named by the fill (percent of the MOQ) from which its price applies."""

    T25 = 25
    T50 = 50
    T75 = 75
    T100 = 100


class SessionStatus(StrEnum):
    FORMING = "forming"  # no paid participant yet
    ACTIVE = "active"
    MOQ_REACHED = "moq_reached"  # paid quantity >= MOQ; joins stay open until endTime
    PENDING_STOCK = "pending_stock"
    STOCK_RECEIVED = "stock_received"
    SUCCESS = "success"
    FAILED = "failed"
    CANCELLED = "cancelled"


class ParticipantStatus(StrEnum):
    PENDING_PAYMENT = "pending_payment"
    PAID = "paid"
    CANCELLED = "cancelled"
    REFUNDED = "refunded"


class CancelReason(StrEnum):
    PAYMENT_EXPIRED = "payment_expired"
    PAYMENT_FAILED = "payment_failed"
    SESSION_CANCELLED = "session_cancelled"
    SESSION_CLOSED = "session_closed"  # still unpaid when the session closed
    JOIN_FAILED = "join_failed"  # the join could not be completed; anything paid goes back
    HOLD_LAPSED = "hold_lapsed"  # unpaid (or paid too late to keep) when its stock hold ended


class PaymentEventStatus(StrEnum):
    """What payment-service reports of a participant's payment."""

    PAID = "paid"
    EXPIRED = "expired"
    FAILED = "failed"


class CloseStep(StrEnum):
    """How far a session's close has gone, in order; each step is safe to repeat, so a close
    stopped half way (the process killed) continues from the last step recorded."""

    UNPAID_CANCELLED = "unpaid_cancelled"  # unpaid joins cancelled, final unit prices set
    UNPAID_RELEASED = "unpaid_released"  # their invoices expired and their stock released
    REFUNDED = "refunded"  # a failed group's participants paid back in full
    ORDERED = "ordered"  # reached: the tier refunds and the paid participants' orders made
    DONE = "done"  # failed, success or pending_stock


class CloseOutcome(StrEnum):
    SUCCESS = "success"
    PENDING_STOCK = "pending_stock"
    FAILED = "failed"
    UNFINISHED = "unfinished"  # stopped by an error; the next run continues where it stopped


OPEN_STATUSES = frozenset({SessionStatus.FORMING, SessionStatus.ACTIVE, SessionStatus.MOQ_REACHED})
"""The statuses in which a session accepts joins (before its endTime)."""


@dataclass(frozen=True)
class TierPrices:
    """Unit prices in rupiah per tier; they never rise with the tier."""

    tier_25: int
    tier_50: int
    tier_75: int
    tier_100: int

    def rises(self) -> bool:
        return not (self.tier_25 >= self.tier_50 >= self.tier_75 >= self.tier_100)

    def price(self, tier: Tier) -> int:
        return {
            Tier.T25: self.tier_25,
            Tier.T50: self.tier_50,
            Tier.T75: self.tier_75,
            Tier.T100: self.tier_100,
        }[tier]


class GroupTerms(Protocol):
    """What the rules read of a group buy (a session row): its tier prices, MOQ and paid
    quantity, its status and end time."""

    price_tier_25: int
    price_tier_50: int
    price_tier_75: int
    price_tier_100: int
    target_moq: int
    paid_quantity: int
    status: str
    end_time: datetime


def tier_prices(group: GroupTerms) -> TierPrices:
    return TierPrices(
        group.price_tier_25, group.price_tier_50, group.price_tier_75, group.price_tier_100
    )


class AvailabilityStatus(StrEnum):
    """A variant's stock as warehouse-service reports it to those deciding to join."""

    IN_STOCK = "in_stock"
    LOW_STOCK = "low_stock"
    OUT_OF_STOCK = "out_of_stock"


def is_joinable(group: GroupTerms, at: datetime) -> bool:
    return group.status in OPEN_STATUSES and at < group.end_time


def tier_for(paid_quantity: int, target_moq: int) -> Tier:
    """The tier of a fill of `paid_quantity / target_moq`: below 50% → 25, 50% up to 75% → 50,
    75% up to 100% → 75, 100% or more → 100. Compared exactly (no rounding of the fill)."""
    if target_moq <= 0 or paid_quantity < 0:
        raise ValueError("target_moq must be positive and paid_quantity not negative")
    if paid_quantity >= target_moq:
        return Tier.T100
    if 4 * paid_quantity >= 3 * target_moq:
        return Tier.T75
    if 2 * paid_quantity >= target_moq:
        return Tier.T50
    return Tier.T25


def fill_basis_points(paid_quantity: int, target_moq: int) -> int:
    """Fill in basis points (10,000 = the MOQ), rounded down so it never shows a tier early;
    above 10,000 once the group has outgrown its MOQ."""
    return paid_quantity * BASIS_POINTS // target_moq


def unit_price(prices: TierPrices, paid_quantity: int, target_moq: int) -> int:
    """What one unit of any variant costs a new join: the tier price of the fill before the
    join. A variant's price adjustment is its catalog price, not a group-buy surcharge (design
    7: the seed's Medium joins at 95,000, as Small and Large do)."""
    return prices.price(tier_for(paid_quantity, target_moq))


def current_unit_price(group: GroupTerms) -> int:
    """A new join's unit price, the same for every variant: the tier of the paid fill before it
    (at the close, the final unit price of every paid participant)."""
    return unit_price(tier_prices(group), group.paid_quantity, group.target_moq)


def tier_refund(unit_price: int, final_unit_price: int, quantity: int) -> int:
    """What a paid participant gets back at the close: the difference to the final unit price
    over its quantity."""
    return (unit_price - final_unit_price) * quantity


def status_after_payment(
    status: SessionStatus, paid_quantity: int, target_moq: int
) -> SessionStatus:
    """The status once the paid quantity is `paid_quantity`: forming → active on the first paid
    unit, → moq_reached at the MOQ. Only a session still taking joins moves."""
    if status not in OPEN_STATUSES:
        return status
    if paid_quantity >= target_moq:
        return SessionStatus.MOQ_REACHED
    if paid_quantity > 0 and status == SessionStatus.FORMING:
        return SessionStatus.ACTIVE
    return status


# How participants and sessions are named to warehouse- and payment-service -------------------

PARTICIPANT_REFERENCE_PREFIX = "participant:"


def participant_reference(participant_id: uuid.UUID) -> str:
    """Names the participant's stock reservation and escrow payment in the other services."""
    return f"{PARTICIPANT_REFERENCE_PREFIX}{participant_id}"


def participant_named(reference: str) -> uuid.UUID | None:
    """The participant `reference` names; None when it names none."""
    if not reference.startswith(PARTICIPANT_REFERENCE_PREFIX):
        return None
    try:
        return uuid.UUID(reference.removeprefix(PARTICIPANT_REFERENCE_PREFIX))
    except ValueError:
        return None


def reservation_group(session_id: uuid.UUID) -> str:
    """Names a session's reservations together in warehouse-service, released or taken out of
    stock in one call."""
    return f"session:{session_id}"


def refund_reference(session_id: uuid.UUID, participant_id: uuid.UUID) -> str:
    """Names a participant's refund in payment-service, which refunds each reference once."""
    return f"{reservation_group(session_id)}:participant:{participant_id}"
