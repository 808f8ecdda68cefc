"""Goods in hand, orders out (seed step 8 -> 9): once a group buy's stock is taken out of the
warehouse (at its close, or when the purchase order covering its shortage is received), its
orders become ready to ship and their shipments are booked.

Written to the outbox with the fulfilment that puts the goods in hand, so neither is lost to an
order-service or logistics-service outage; the delivery tells order-service first (the orders
ready, their buyers told), then asks logistics-service to book the group buy's parcels. Both
calls carry one idempotency key per group buy and are safe to repeat; a failure raises, so the
relay tries again.
"""

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from laku.core.outbox import enqueue
from laku.logistics.client import LogisticsClient
from laku.order.client import OrderClient
from laku.warehouse.models import outbox

SHIP_GROUP = "ship_group"
SESSION_GROUP_PREFIX = "session:"  # how group-buying names a session's reservations


async def goods_in_hand(session: AsyncSession, group: str) -> None:
    """Called in the transaction that takes the group's goods out of stock."""
    if group.startswith(SESSION_GROUP_PREFIX):
        await enqueue(session, outbox, SHIP_GROUP, {"group": group})


async def ship_group(
    orders: OrderClient, logistics: LogisticsClient, payload: dict[str, Any]
) -> None:
    group = payload["group"]
    session_id = uuid.UUID(group.removeprefix(SESSION_GROUP_PREFIX))
    await orders.mark_session_ready(session_id, idempotency_key=f"goods-in-hand:{group}")
    await logistics.book_session(session_id, idempotency_key=f"ship-group:{group}")
