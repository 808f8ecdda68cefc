"""Buyers' orders: cancel one (its subtotal back to the buyer's wallet) or book its shipment."""

import asyncio
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from laku.web.pages import Admin, Form, Visitor, form_values, render
from laku.web.routes.forms import page_context, send_form, shown_at

router = APIRouter(prefix="/admin")
COURIERS = (("jne|reg", "JNE REG"), ("jnt|ez", "J&T EZ"), ("sicepat|reg", "SiCepat REG"))


async def orders_page(visitor, *, values=None, error=None, status_code=200) -> Response:
    """The latest orders, each with its shipment once one is booked."""
    orders, shipments = await asyncio.gather(
        visitor.backend.get("order", "/api/orders", limit=100), _shipments_by_order(visitor)
    )
    context = page_context(visitor, values, error, status_code)
    return render(
        visitor,
        "admin/orders.html",
        orders=orders["items"],
        shipments=shipments,
        couriers=COURIERS,
        **context,
    )


async def _shipments_by_order(visitor: Visitor) -> dict[str, dict[str, Any]]:
    """The latest shipments, by the order each carries."""
    page = await visitor.backend.get("logistics", "/api/shipments", limit=100)
    return {shipment["orderId"]: shipment for shipment in page["items"]}


shown_at(router, "/orders", orders_page)


@router.post("/orders/{order_id}/cancel")
async def cancel_order(visitor: Admin, order_id: str, form: Form) -> Response:
    reason = form_values(form).get("reason", "").strip()
    return await send_form(
        visitor,
        orders_page,
        "/admin/orders",
        "order",
        f"/api/orders/{order_id}/cancel",
        {"reason": reason},
    )


@router.post("/orders/{order_id}/shipment")
async def book_shipment(visitor: Admin, order_id: str, form: Form) -> Response:
    values = form_values(form)
    courier, _, service_type = values.get("courier", "jne|reg").partition("|")
    body = {"orderId": order_id, "courierCompany": courier, "courierType": service_type}
    return await send_form(
        visitor, orders_page, "/admin/orders", "logistics", "/api/shipments", body
    )
