"""The admin's dashboard: group buys by status, escrow held, low stock, open purchase orders and
the outboxes' undelivered work."""

import asyncio

from fastapi import APIRouter
from fastapi.responses import Response

from laku.web.pages import OPEN_SESSION_STATUSES, Admin, render

router = APIRouter(prefix="/admin")

# The services that defer work through an outbox; each answers `GET /api/admin/outbox`.
OUTBOX_SERVICES = (
    "group-buying",
    "logistics",
    "notification",
    "order",
    "payment",
    "settlement",
    "wallet",
    "warehouse",
)


@router.get("")
async def dashboard(visitor: Admin) -> Response:
    backend = visitor.backend
    sessions, low_stock, purchase_orders, paid, *outboxes = await asyncio.gather(
        backend.get("group-buying", "/api/group-buying/status-counts"),
        backend.get("warehouse", "/api/inventory/low-stock"),
        backend.get("warehouse", "/api/purchase-orders", status="open", limit=50),
        backend.get("payment", "/api/payments", status="paid", limit=100),
        *(backend.get(service, "/api/admin/outbox") for service in OUTBOX_SERVICES),
    )
    held = [p for p in paid["items"] if p["escrowStatus"] == "held"]
    return render(
        visitor,
        "admin/dashboard.html",
        by_status=[(status, count) for status, count in sessions.items() if count],
        open_sessions=sum(sessions[status] for status in OPEN_SESSION_STATUSES),
        low_stock=low_stock,
        purchase_orders=purchase_orders,
        escrow_payments=len(held),
        escrow_amount=sum(p["amount"] - p["refundedAmount"] for p in held),
        escrow_partial=paid["total"] > len(paid["items"]),
        outboxes=list(zip(OUTBOX_SERVICES, outboxes, strict=True)),
    )
