"""The catalog: factories (create, verify, reject), categories, and products with their variants,
photos, bundle composition and stock."""

import asyncio
from collections.abc import Awaitable
from typing import Any

from fastapi import APIRouter
from fastapi.responses import RedirectResponse, Response
from starlette.datastructures import UploadFile

from laku.core.errors import DomainError
from laku.web.pages import Admin, Form, Visitor, form_values, int_field, render
from laku.web.photos import NoPhoto, fit_for_upload
from laku.web.routes.forms import button, listing, page_context, send_form, shown_at, submit

router = APIRouter(prefix="/admin")

# Factories -----------------------------------------------------------------------------------

factories_page = listing(
    "admin/factories.html", "factories", "factory", "/api/factories", limit=100
)
shown_at(router, "/factories", factories_page)


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
    return await send_form(
        visitor, factories_page, "/admin/factories", "factory", "/api/factories", body
    )


@router.post("/factories/{factory_id}/verification")
async def verify_factory(visitor: Admin, factory_id: str, form: Form) -> Response:
    values = form_values(form)
    body: dict[str, Any] = {"status": values.get("status", "")}
    if values.get("reason", "").strip():
        body["reason"] = values["reason"].strip()
    return await send_form(
        visitor,
        factories_page,
        "/admin/factories",
        "factory",
        f"/api/factories/{factory_id}/verification",
        body,
        method="PATCH",
    )


# Categories ----------------------------------------------------------------------------------

categories_page = listing("admin/categories.html", "categories", "product", "/api/categories")
shown_at(router, "/categories", categories_page)


@router.post("/categories")
async def create_category(visitor: Admin, form: Form) -> Response:
    values = form_values(form)
    body: dict[str, Any] = {"name": values.get("name", "").strip()}
    if values.get("slug", "").strip():
        body["slug"] = values["slug"].strip()
    if values.get("parentId"):
        body["parentId"] = values["parentId"]
    return await send_form(
        visitor, categories_page, "/admin/categories", "product", "/api/categories", body
    )


# Products ------------------------------------------------------------------------------------


async def products_page(visitor, *, values=None, error=None, status_code=200) -> Response:
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
        **page_context(visitor, values, error, status_code),
    )


shown_at(router, "/products", products_page)


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

    response = await submit(visitor, products_page, create, "/admin/products")
    if created:
        return RedirectResponse(f"/admin/products/{created['id']}", status_code=303)
    return response


async def product_page(visitor, *, values=None, error=None, status_code=200) -> Response:
    """`/admin/products/{product_id}` and the forms posted under it."""
    product_id = visitor.request.path_params["product_id"]
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
        **page_context(visitor, values, error, status_code),
    )


async def _composition(visitor: Visitor, product_id: str) -> dict[str, Any] | None:
    try:
        return await visitor.backend.get("group-buying", f"/api/bundle-composition/{product_id}")
    except DomainError as exc:
        if exc.status == 404:
            return None
        raise


PRODUCT = "/products/{product_id}"
shown_at(router, PRODUCT, product_page)
for action in ("publish", "archive"):
    button(
        router,
        f"{PRODUCT}/{action}",
        product_page,
        "product",
        f"/api{PRODUCT}/{action}",
        back=f"/admin{PRODUCT}",
    )


def _on_product(
    visitor: Visitor, product_id: str, service: str, path: str, body: Any, *, method: str = "POST"
) -> Awaitable[Response]:
    return send_form(
        visitor, product_page, f"/admin/products/{product_id}", service, path, body, method=method
    )


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
    return await _on_product(
        visitor, product_id, "product", f"/api/products/{product_id}/variants", body
    )


@router.post("/products/{product_id}/bundle")
async def set_bundle(visitor: Admin, product_id: str, form: Form) -> Response:
    items = [
        {"variantId": key.removeprefix("units-"), "unitsInBundle": int_field(form, key)}
        for key in form
        if key.startswith("units-") and int_field(form, key)
    ]
    return await _on_product(
        visitor,
        product_id,
        "group-buying",
        f"/api/admin/bundle-composition/{product_id}",
        items,
        method="PUT",
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
    return await _on_product(visitor, product_id, "warehouse", "/api/inventory", items)


@router.post("/products/{product_id}/adjustments")
async def adjust_stock(visitor: Admin, product_id: str, form: Form) -> Response:
    values = form_values(form)
    body = {"delta": int_field(form, "delta"), "reason": values.get("reason", "").strip()}
    variant_id = values.get("variantId", "")
    return await _on_product(
        visitor, product_id, "warehouse", f"/api/inventory/{variant_id}/adjustments", body
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

    return await submit(visitor, product_page, send, f"/admin/products/{product_id}")
