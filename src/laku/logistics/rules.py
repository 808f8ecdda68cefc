"""logistics' shipment statuses and the rules that read them (no I/O).

A shipment takes Biteship's order statuses (`ORDER_STATUSES`), in snake_case; before Biteship
has booked its courier it is `creating`."""

import re
from datetime import timedelta

# A shipment claimed by a booking whose courier Biteship has not booked yet.
CREATING = "creating"
# Statuses in which the courier has the parcel: the order has shipped.
COURIER_HAS_PARCEL = frozenset({"picked", "dropping_off", "delivered"})
DELIVERED = "delivered"
# A claim left `creating` this long belongs to a booking whose process died (or whose Biteship
# call was never answered); a retry may take it over. Far longer than a Biteship call may take.
ABANDONED_AFTER = timedelta(minutes=2)


def shipment_status(reported: str) -> str:
    """Biteship's statuses in snake_case (`pickingUp` as some couriers' feeds spell it too)."""
    return re.sub(r"(?<=[a-z])([A-Z])", r"_\1", reported).lower()
