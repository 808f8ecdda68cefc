"""Group buys (open with tier prices and an end time, cancel, close the expired now) and the
purchase orders they lead to (receive)."""

import asyncio
from datetime import datetime, timedelta

from fastapi import APIRouter
from fastapi.responses import Response

from laku.web.formatting import WIB
from laku.web.pages import SESSION_STATUSES, Admin, Form, form_values, int_field, render
from laku.web.routes.forms import button, listing, page_context, send_form, shown_at, wib_input

router = APIRouter(prefix="/admin")


async def group_buys_page(visitor, *, values=None, error=None, status_code=200) -> Response:
    backend = visitor.backend
    sessions, products = await asyncio.gather(
        backend.get("group-buying", "/api/group-buying", status=SESSION_STATUSES, limit=100),
        backend.get("product", "/api/products", status="published", limit=100),
    )
    end = datetime.now(WIB) + timedelta(days=7)
    defaults = {
        "endTime": end.strftime("%Y-%m-%dT%H:%M"),
        "estimatedCompletionDate": (end + timedelta(days=14)).strftime("%Y-%m-%dT%H:%M"),
    }
    return render(
        visitor,
        "admin/group_buys.html",
        sessions=sessions["items"],
        products=products["items"],
        **page_context(visitor, {**defaults, **(values or {})}, error, status_code),
    )


shown_at(router, "/group-buys", group_buys_page)
button(
    router,
    "/group-buys/close-expired",
    group_buys_page,
    "group-buying",
    "/api/group-buying/process-expired",
    back="/admin/group-buys",
)
button(
    router,
    "/group-buys/{session_id}/cancel",
    group_buys_page,
    "group-buying",
    "/api/group-buying/{session_id}/cancel",
    back="/admin/group-buys",
)


@router.post("/group-buys")
async def open_group_buy(visitor: Admin, form: Form) -> Response:
    values = form_values(form)
    product_id, _, factory_id = values.get("product", "").partition("|")
    body = {
        "productId": product_id,
        "factoryId": factory_id,
        "targetMoq": int_field(form, "targetMoq"),
        **{f"priceTier{tier}": int_field(form, f"priceTier{tier}") for tier in (25, 50, 75, 100)},
        "endTime": wib_input(values.get("endTime", "")),
        "estimatedCompletionDate": wib_input(values.get("estimatedCompletionDate", "")),
    }
    return await send_form(
        visitor, group_buys_page, "/admin/group-buys", "group-buying", "/api/group-buying", body
    )


purchase_orders_page = listing(
    "admin/purchase_orders.html",
    "purchase_orders",
    "warehouse",
    "/api/purchase-orders",
    limit=100,
)
shown_at(router, "/purchase-orders", purchase_orders_page)
button(
    router,
    "/purchase-orders/{purchase_order_id}/receive",
    purchase_orders_page,
    "warehouse",
    "/api/purchase-orders/{purchase_order_id}/receive",
    back="/admin/purchase-orders",
)
