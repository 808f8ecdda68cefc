"""The factory portal: a factory's own purchase orders (shipped with a tracking number), its
settlements and its products' group buys. The services scope every call to the caller's factory."""

import asyncio

from fastapi import APIRouter
from fastapi.responses import RedirectResponse, Response

from laku.core.errors import DomainError
from laku.web.pages import SESSION_STATUSES, FactoryStaff, Form, Visitor, form_values, render
from laku.web.routes.forms import page_context

router = APIRouter(prefix="/factory")


async def _home(visitor: Visitor, *, values=None, error=None, status_code=200) -> Response:
    backend = visitor.backend
    factory_id = str(visitor.principal.factory_id) if visitor.principal else ""
    factory, purchase_orders, settlements, sessions = await asyncio.gather(
        backend.get("factory", "/api/factories/me"),
        backend.get("warehouse", "/api/purchase-orders", limit=100),
        backend.get("settlement", "/api/settlements", factoryId=factory_id, limit=50),
        backend.get(
            "group-buying",
            "/api/group-buying",
            status=SESSION_STATUSES,
            factoryId=factory_id,
            limit=100,
        ),
    )
    return render(
        visitor,
        "factory/home.html",
        factory=factory,
        purchase_orders=purchase_orders["items"],
        settlements=settlements["items"],
        sessions=sessions["items"],
        **page_context(visitor, values, error, status_code),
    )


@router.get("")
async def home(visitor: FactoryStaff) -> Response:
    return await _home(visitor)


@router.get("/purchase-orders")
async def purchase_orders(visitor: FactoryStaff) -> Response:
    return await _home(visitor)


@router.get("/purchase-orders/{purchase_order_id}")
async def purchase_order(visitor: FactoryStaff, purchase_order_id: str) -> Response:
    """Another factory's purchase order does not exist for this one (the service says 404)."""
    found = await visitor.backend.get("warehouse", f"/api/purchase-orders/{purchase_order_id}")
    return render(visitor, "factory/purchase_order.html", po=found)


@router.post("/purchase-orders/{purchase_order_id}/ship")
async def ship(visitor: FactoryStaff, purchase_order_id: str, form: Form) -> Response:
    values = form_values(form)
    body = {"trackingNumber": values.get("trackingNumber", "").strip()}
    try:
        await visitor.backend.post(
            "warehouse", f"/api/purchase-orders/{purchase_order_id}/ship", body
        )
    except DomainError as exc:
        if exc.status == 404:
            raise
        return await _home(
            visitor, values=values, error=visitor.refusal(exc), status_code=exc.status
        )
    return RedirectResponse("/factory?done=1", status_code=303)
