"""The admin console: the catalog, stock, group buys, purchase orders, orders and settlements.
Every rule stays in the services; a refusal is shown on the form it came from."""

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter
from fastapi.responses import RedirectResponse, Response
from starlette.datastructures import UploadFile

from laku.core.errors import DomainError
from laku.web.formatting import WIB
from laku.web.pages import Admin, Form, Visitor, form_values, int_field, render
from laku.web.photos import NoPhoto, fit_for_upload

router = APIRouter(prefix="/admin")

PageLoader = Callable[..., Awaitable[Response]]
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
BANKS = ("BCA", "BNI", "BRI", "MANDIRI", "PERMATA", "CIMB", "BSI", "DANAMON", "BTN")


async def _submit(
    visitor: Visitor,
    form_page: PageLoader,
    call: Callable[[], Awaitable[Any]],
    redirect_to: str,
    *page_args: Any,
) -> Response:
    """Do the call; on success back to the page (303, so a reload posts nothing again), on a
    refusal the page again with the message and what was typed."""
    try:
        await call()
    except DomainError as exc:
        return await form_page(
            visitor,
            *page_args,
            values=form_values(await visitor.request.form()),
            error=visitor.refusal(exc),
            status_code=exc.status if exc.status < 500 else 503,
        )
    separator = "&" if "?" in redirect_to else "?"
    return RedirectResponse(f"{redirect_to}{separator}done=1", status_code=303)


def _wib_input(value: str) -> str:
    """An `<input type=datetime-local>` value read as Jakarta time, as ISO 8601 with its offset."""
    try:
        return datetime.fromisoformat(value).replace(tzinfo=WIB).isoformat()
    except ValueError:
        return value


def _common(visitor: Visitor, values, error, status_code) -> dict[str, Any]:
    done = visitor.request.query_params.get("done") == "1" and error is None
    return {
        "values": values or {},
        "error": error,
        "notice": visitor.t("common.done") if done else None,
        "status_code": status_code,
    }


# Dashboard -----------------------------------------------------------------------------------


@router.get("")
async def dashboard(visitor: Admin) -> Response:
    backend = visitor.backend
    sessions, low_stock, purchase_orders, paid, *outboxes = await asyncio.gather(
        backend.get("group-buying", "/api/group-buying", limit=100),
        backend.get("warehouse", "/api/inventory/low-stock"),
        backend.get("warehouse", "/api/purchase-orders", status="open", limit=50),
        backend.get("payment", "/api/payments", status="paid", limit=100),
        *(backend.get(service, "/api/admin/outbox") for service in OUTBOX_SERVICES),
    )
    held = [p for p in paid["items"] if p["escrowStatus"] == "held"]
    return render(
        visitor,
        "admin/dashboard.html",
        by_status=sorted(Counter(s["status"] for s in sessions["items"]).items()),
        open_sessions=sessions["total"],
        low_stock=low_stock,
        purchase_orders=purchase_orders,
        escrow_payments=len(held),
        escrow_amount=sum(p["amount"] - p["refundedAmount"] for p in held),
        escrow_partial=paid["total"] > len(paid["items"]),
        outboxes=list(zip(OUTBOX_SERVICES, outboxes, strict=True)),
    )


# Factories -----------------------------------------------------------------------------------


async def _factories_page(visitor, *, values=None, error=None, status_code=200) -> Response:
    page = await visitor.backend.get("factory", "/api/factories", limit=100)
    return render(
        visitor,
        "admin/factories.html",
        factories=page["items"],
        **_common(visitor, values, error, status_code),
    )


@router.get("/factories")
async def factories(visitor: Admin) -> Response:
    return await _factories_page(visitor)


@router.post("/factories")
async def create_factory(visitor: Admin, form: Form) -> Response:
    values = form_values(form)
    body = {
        key: values.get(key, "").strip()
        for key in ("name", "ownerName", "phone", "address", "postalCode")
    }
    for optional in ("email", "city"):
        if values.get(optional, "").strip():
            body[optional] = values[optional].strip()
    return await _submit(
        visitor,
        _factories_page,
        lambda: visitor.backend.post("factory", "/api/factories", body, key=values.get("key")),
        "/admin/factories",
    )


@router.post("/factories/{factory_id}/verification")
async def verify_factory(visitor: Admin, factory_id: str, form: Form) -> Response:
    values = form_values(form)
    body: dict[str, Any] = {"status": values.get("status", "")}
    if values.get("reason", "").strip():
        body["reason"] = values["reason"].strip()
    return await _submit(
        visitor,
        _factories_page,
        lambda: visitor.backend.send(
            "PATCH", "factory", f"/api/factories/{factory_id}/verification", body
        ),
        "/admin/factories",
    )


# Categories ----------------------------------------------------------------------------------


async def _categories_page(visitor, *, values=None, error=None, status_code=200) -> Response:
    categories = await visitor.backend.get("product", "/api/categories")
    return render(
        visitor,
        "admin/categories.html",
        categories=categories,
        **_common(visitor, values, error, status_code),
    )


@router.get("/categories")
async def categories(visitor: Admin) -> Response:
    return await _categories_page(visitor)


@router.post("/categories")
async def create_category(visitor: Admin, form: Form) -> Response:
    values = form_values(form)
    body: dict[str, Any] = {"name": values.get("name", "").strip()}
    if values.get("slug", "").strip():
        body["slug"] = values["slug"].strip()
    if values.get("parentId"):
        body["parentId"] = values["parentId"]
    return await _submit(
        visitor,
        _categories_page,
        lambda: visitor.backend.post("product", "/api/categories", body, key=values.get("key")),
        "/admin/categories",
    )


# Products ------------------------------------------------------------------------------------


async def _products_page(visitor, *, values=None, error=None, status_code=200) -> Response:
    backend = visitor.backend
    products, categories, factories = await asyncio.gather(
        backend.get("product", "/api/products", limit=100),
        backend.get("product", "/api/categories"),
        backend.get("factory", "/api/factories", limit=100),
    )
    return render(
        visitor,
        "admin/products.html",
        products=products["items"],
        categories=categories,
        factories=factories["items"],
        **_common(visitor, values, error, status_code),
    )


@router.get("/products")
async def products(visitor: Admin) -> Response:
    return await _products_page(visitor)


@router.post("/products")
async def create_product(visitor: Admin, form: Form) -> Response:
    values = form_values(form)
    body: dict[str, Any] = {
        "factoryId": values.get("factoryId", ""),
        "categoryId": values.get("categoryId", ""),
        "sku": values.get("sku", "").strip(),
        "name": values.get("name", "").strip(),
        "description": values.get("description", "").strip() or None,
        "basePrice": int_field(form, "basePrice"),
        "costPrice": int_field(form, "costPrice"),
        "moq": int_field(form, "moq"),
        "groupDurationHours": int_field(form, "groupDurationHours"),
    }
    created: dict[str, Any] = {}

    async def create() -> None:
        created.update(
            await visitor.backend.post("product", "/api/products", body, key=values.get("key"))
        )

    response = await _submit(visitor, _products_page, create, "/admin/products")
    if created:
        return RedirectResponse(f"/admin/products/{created['id']}", status_code=303)
    return response


async def _product_page(
    visitor: Visitor, product_id: str, *, values=None, error=None, status_code=200
) -> Response:
    backend = visitor.backend
    product, stock, composition = await asyncio.gather(
        backend.get("product", f"/api/products/{product_id}"),
        backend.get("warehouse", "/api/inventory", productId=product_id),
        _composition(visitor, product_id),
    )
    inventory = {v["variantId"]: v for entry in stock for v in entry["variants"]}
    bundle = {
        item["variantId"]: item["unitsInBundle"] for item in (composition or {}).get("items", [])
    }
    return render(
        visitor,
        "admin/product.html",
        product=product,
        inventory=inventory,
        unstocked=[v for v in product["variants"] if v["id"] not in inventory],
        bundle=bundle,
        **_common(visitor, values, error, status_code),
    )


async def _composition(visitor: Visitor, product_id: str) -> dict[str, Any] | None:
    try:
        return await visitor.backend.get("group-buying", f"/api/bundle-composition/{product_id}")
    except DomainError as exc:
        if exc.status == 404:
            return None
        raise


@router.get("/products/{product_id}")
async def product(visitor: Admin, product_id: str) -> Response:
    return await _product_page(visitor, product_id)


def _product_action(visitor: Visitor, product_id: str, call) -> Awaitable[Response]:
    return _submit(visitor, _product_page, call, f"/admin/products/{product_id}", product_id)


@router.post("/products/{product_id}/variants")
async def add_variant(visitor: Admin, product_id: str, form: Form) -> Response:
    values = form_values(form)
    body = [
        {
            "sku": values.get("variantSku", "").strip(),
            "variantName": values.get("variantName", "").strip(),
            "priceAdjustment": int_field(form, "priceAdjustment") or 0,
        }
    ]
    return await _product_action(
        visitor,
        product_id,
        lambda: visitor.backend.post("product", f"/api/products/{product_id}/variants", body),
    )


@router.post("/products/{product_id}/publish")
async def publish_product(visitor: Admin, product_id: str, _: Form) -> Response:
    return await _product_action(
        visitor,
        product_id,
        lambda: visitor.backend.post("product", f"/api/products/{product_id}/publish"),
    )


@router.post("/products/{product_id}/archive")
async def archive_product(visitor: Admin, product_id: str, _: Form) -> Response:
    return await _product_action(
        visitor,
        product_id,
        lambda: visitor.backend.post("product", f"/api/products/{product_id}/archive"),
    )


@router.post("/products/{product_id}/bundle")
async def set_bundle(visitor: Admin, product_id: str, form: Form) -> Response:
    items = [
        {"variantId": key.removeprefix("units-"), "unitsInBundle": int_field(form, key)}
        for key in form
        if key.startswith("units-") and int_field(form, key)
    ]
    return await _product_action(
        visitor,
        product_id,
        lambda: visitor.backend.send(
            "PUT", "group-buying", f"/api/admin/bundle-composition/{product_id}", items
        ),
    )


@router.post("/products/{product_id}/inventory")
async def create_inventory(visitor: Admin, product_id: str, form: Form) -> Response:
    variant_ids = [key.removeprefix("stock-") for key in form if key.startswith("stock-")]
    items = [
        {
            "productId": product_id,
            "variantId": variant_id,
            "quantity": int_field(form, f"stock-{variant_id}"),
            "maxStockLevel": int_field(form, f"max-{variant_id}"),
            "reorderThreshold": int_field(form, f"reorder-{variant_id}"),
        }
        for variant_id in variant_ids
        if int_field(form, f"stock-{variant_id}") is not None
    ]
    return await _product_action(
        visitor, product_id, lambda: visitor.backend.post("warehouse", "/api/inventory", items)
    )


@router.post("/products/{product_id}/adjustments")
async def adjust_stock(visitor: Admin, product_id: str, form: Form) -> Response:
    values = form_values(form)
    body = {"delta": int_field(form, "delta"), "reason": values.get("reason", "").strip()}
    variant_id = values.get("variantId", "")
    return await _product_action(
        visitor,
        product_id,
        lambda: visitor.backend.post(
            "warehouse", f"/api/inventory/{variant_id}/adjustments", body, key=values.get("key")
        ),
    )


@router.post("/products/{product_id}/images")
async def upload_image(visitor: Admin, product_id: str, form: Form) -> Response:
    """The photo goes to product-service, which checks it is an image and sizes it for phones."""
    upload = form.get("image")

    async def send() -> None:
        if not isinstance(upload, UploadFile) or not upload.filename:
            raise NoPhoto("Choose a photo to upload")
        data = fit_for_upload(await upload.read())
        await visitor.backend.upload_product_image(product_id, data)

    return await _product_action(visitor, product_id, send)


# Group buys ----------------------------------------------------------------------------------


async def _group_buys_page(visitor, *, values=None, error=None, status_code=200) -> Response:
    backend = visitor.backend
    sessions, products = await asyncio.gather(
        backend.get("group-buying", "/api/group-buying", limit=100),
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
        **_common(visitor, {**defaults, **(values or {})}, error, status_code),
    )


@router.get("/group-buys")
async def group_buys(visitor: Admin) -> Response:
    return await _group_buys_page(visitor)


@router.post("/group-buys")
async def open_group_buy(visitor: Admin, form: Form) -> Response:
    values = form_values(form)
    product_id, _, factory_id = values.get("product", "").partition("|")
    end = _wib_input(values.get("endTime", ""))
    completion = _wib_input(values.get("estimatedCompletionDate", ""))
    body = {
        "productId": product_id,
        "factoryId": factory_id,
        "targetMoq": int_field(form, "targetMoq"),
        **{f"priceTier{tier}": int_field(form, f"priceTier{tier}") for tier in (25, 50, 75, 100)},
        "endTime": end,
        "estimatedCompletionDate": completion,
    }
    return await _submit(
        visitor,
        _group_buys_page,
        lambda: visitor.backend.post(
            "group-buying", "/api/group-buying", body, key=values.get("key")
        ),
        "/admin/group-buys",
    )


@router.post("/group-buys/close-expired")
async def close_expired(visitor: Admin, _: Form) -> Response:
    return await _submit(
        visitor,
        _group_buys_page,
        lambda: visitor.backend.post("group-buying", "/api/group-buying/process-expired"),
        "/admin/group-buys",
    )


@router.post("/group-buys/{session_id}/cancel")
async def cancel_group_buy(visitor: Admin, session_id: str, _: Form) -> Response:
    return await _submit(
        visitor,
        _group_buys_page,
        lambda: visitor.backend.post("group-buying", f"/api/group-buying/{session_id}/cancel"),
        "/admin/group-buys",
    )


# Purchase orders -----------------------------------------------------------------------------


async def _purchase_orders_page(visitor, *, values=None, error=None, status_code=200) -> Response:
    page = await visitor.backend.get("warehouse", "/api/purchase-orders", limit=100)
    return render(
        visitor,
        "admin/purchase_orders.html",
        purchase_orders=page["items"],
        **_common(visitor, values, error, status_code),
    )


@router.get("/purchase-orders")
async def purchase_orders(visitor: Admin) -> Response:
    return await _purchase_orders_page(visitor)


@router.post("/purchase-orders/{purchase_order_id}/receive")
async def receive(visitor: Admin, purchase_order_id: str, _: Form) -> Response:
    return await _submit(
        visitor,
        _purchase_orders_page,
        lambda: visitor.backend.post(
            "warehouse", f"/api/purchase-orders/{purchase_order_id}/receive"
        ),
        "/admin/purchase-orders",
    )


# Orders --------------------------------------------------------------------------------------


async def _orders_page(visitor, *, values=None, error=None, status_code=200) -> Response:
    page = await visitor.backend.get("order", "/api/orders", limit=100)
    return render(
        visitor,
        "admin/orders.html",
        orders=page["items"],
        **_common(visitor, values, error, status_code),
    )


@router.get("/orders")
async def orders(visitor: Admin) -> Response:
    return await _orders_page(visitor)


@router.post("/orders/{order_id}/cancel")
async def cancel_order(visitor: Admin, order_id: str, form: Form) -> Response:
    reason = form_values(form).get("reason", "").strip()
    return await _submit(
        visitor,
        _orders_page,
        lambda: visitor.backend.post("order", f"/api/orders/{order_id}/cancel", {"reason": reason}),
        "/admin/orders",
    )


@router.post("/orders/{order_id}/shipment")
async def book_shipment(visitor: Admin, order_id: str, form: Form) -> Response:
    values = form_values(form)
    courier, _, service_type = values.get("courier", "jne|reg").partition("|")
    body = {"orderId": order_id, "courierCompany": courier, "courierType": service_type}
    return await _submit(
        visitor,
        _orders_page,
        lambda: visitor.backend.post("logistics", "/api/shipments", body, key=values.get("key")),
        "/admin/orders",
    )


# Settlements and the ledger ------------------------------------------------------------------


async def _settlements_page(
    visitor, *, values=None, error=None, status_code=200, preview=None
) -> Response:
    backend = visitor.backend
    settlements, factories, ledger = await asyncio.gather(
        backend.get("settlement", "/api/settlements", limit=50),
        backend.get("factory", "/api/factories", limit=100),
        backend.get("settlement", "/api/ledger/balances"),
    )
    return render(
        visitor,
        "admin/settlements.html",
        settlements=settlements["items"],
        factories=factories["items"],
        ledger=ledger,
        preview=preview,
        banks=BANKS,
        **_common(visitor, values, error, status_code),
    )


@router.get("/settlements")
async def settlements(
    visitor: Admin, factoryId: str = "", periodStart: str = "", periodEnd: str = ""
) -> Response:
    if not (factoryId and periodStart and periodEnd):
        return await _settlements_page(visitor)
    values = {"factoryId": factoryId, "periodStart": periodStart, "periodEnd": periodEnd}
    try:
        preview = await visitor.backend.get(
            "settlement",
            "/api/settlements/preview",
            factoryId=factoryId,
            periodStart=_wib_input(periodStart),
            periodEnd=_wib_input(periodEnd),
        )
    except DomainError as exc:
        return await _settlements_page(
            visitor, values=values, error=visitor.refusal(exc), status_code=exc.status
        )
    return await _settlements_page(visitor, values=values, preview=preview)


@router.post("/settlements")
async def create_settlement(visitor: Admin, form: Form) -> Response:
    values = form_values(form)
    body = {
        "factoryId": values.get("factoryId", ""),
        "periodStart": _wib_input(values.get("periodStart", "")),
        "periodEnd": _wib_input(values.get("periodEnd", "")),
    }
    return await _submit(
        visitor,
        _settlements_page,
        lambda: visitor.backend.post("settlement", "/api/settlements", body, key=values.get("key")),
        "/admin/settlements",
    )


@router.post("/settlements/payout-account")
async def payout_account(visitor: Admin, form: Form) -> Response:
    values = form_values(form)
    body = {
        "bankCode": values.get("bankCode", ""),
        "accountNumber": values.get("accountNumber", "").strip(),
        "accountHolderName": values.get("accountHolderName", "").strip(),
    }
    factory_id = values.get("factoryId", "")
    return await _submit(
        visitor,
        _settlements_page,
        lambda: visitor.backend.send(
            "PUT", "settlement", f"/api/settlements/payout-accounts/{factory_id}", body
        ),
        "/admin/settlements",
    )
