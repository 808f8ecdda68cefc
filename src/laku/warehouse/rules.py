"""The warehouse's statuses, the kinds of its deferred work, and the stock rules, as pure
arithmetic."""

import math
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any


class StockStatus(StrEnum):
    """A variant's available stock against its reorder threshold (a product's: its worst)."""

    IN_STOCK = "in_stock"
    LOW_STOCK = "low_stock"
    OUT_OF_STOCK = "out_of_stock"


class FulfilmentStatus(StrEnum):
    """A closed group buy's paid reservations: taken out of stock, or waiting for bundles."""

    AWAITING_STOCK = "awaiting_stock"
    FULFILLED = "fulfilled"


class WarehouseInvoiceStatus(StrEnum):
    """`pending` until an admin records the transfer that paid the factory."""

    PENDING = "pending"
    PAID = "paid"


# Purchase orders whose bundles are still to come in.
OPEN_PURCHASE_ORDER_STATUSES = ("open", "shipped")

SESSION_GROUP_PREFIX = "session:"  # how group-buying names a session's reservations

# The outbox kinds (their handlers are in tasks.py). Named here, below the workflows that
# write them and that tasks.py calls, so that no module imports back.
REORDER = "reorder"
NOTIFY_FACTORY = "notify_factory"
COMPLETE_FULFILMENT = "complete_fulfilment"
SHIP_GROUP = "ship_group"
POST_INVOICE_PAYMENT = "post_invoice_payment"


def stock_status(available: int, reorder_threshold: int) -> StockStatus:
    if available <= 0:
        return StockStatus.OUT_OF_STOCK
    if available <= reorder_threshold:
        return StockStatus.LOW_STOCK
    return StockStatus.IN_STOCK


def crossed_threshold(before: int, after: int, threshold: int) -> bool:
    """Available stock fell to the reorder threshold or below with this change."""
    return before > threshold >= after


def bundles_to_cover(shortages: dict[uuid.UUID, int], units_in_bundle: dict[uuid.UUID, int]) -> int:
    """Whole bundles that cover every variant's shortage: max of ceil(shortage / units)."""
    return max(
        (math.ceil(units / units_in_bundle[variant]) for variant, units in shortages.items()),
        default=0,
    )


def hold_until(requested: datetime | None, longest_hold: timedelta) -> datetime:
    """When a hold asked to last until `requested` lapses: never later than the longest."""
    latest = datetime.now(UTC) + longest_hold
    return latest if requested is None else min(requested, latest)


def units_by_variant(rows: Iterable[Any]) -> dict[uuid.UUID, int]:
    """The units of rows with a `variant_id` and a `quantity`, summed per variant."""
    units: dict[uuid.UUID, int] = {}
    for row in rows:
        units[row.variant_id] = units.get(row.variant_id, 0) + row.quantity
    return units


def session_of_group(group: str) -> uuid.UUID | None:
    """The group-buying session a group of reservations belongs to, if it is one's."""
    if not group.startswith(SESSION_GROUP_PREFIX):
        return None
    return uuid.UUID(group.removeprefix(SESSION_GROUP_PREFIX))
