"""The buyer's account: their group buys, wallet, orders with tracking, addresses, notices."""

import asyncio
import json
from collections.abc import Awaitable
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from laku.core.errors import DomainError
from laku.web.backend import BANKS
from laku.web.pages import Buyer, CsrfHeader, Form, Visitor, form_values, int_field, render
from laku.web.routes.forms import page_context, send_form

router = APIRouter(prefix="/me")

ADDRESS_FIELDS = ("label", "recipientName", "phone", "street", "city", "province", "postalCode")


def _refunds_by_participant(transactions: list[dict[str, Any]]) -> dict[str, int]:
    """The wallet's refund credits by the participant they name (`...:participant:<id>`)."""
    refunds: dict[str, int] = {}
    for item in transactions:
        if item["direction"] == "credit" and ":participant:" in item["reference"]:
            participant = item["reference"].rsplit(":", 1)[-1]
            refunds[participant] = refunds.get(participant, 0) + item["amount"]
    return refunds


@router.get("/group-buys")
async def my_group_buys(visitor: Buyer) -> Response:
    participations, transactions = await asyncio.gather(
        visitor.backend.get("group-buying", "/api/group-buying/participations/me", limit=100),
        visitor.backend.get("wallet", "/api/wallets/me/transactions", limit=100),
    )
    return render(
        visitor,
        "account/group_buys.html",
        items=participations["items"],
        refunds=_refunds_by_participant(transactions["items"]),
    )


async def _wallet_page(visitor, *, values=None, error=None, status_code=200) -> Response:
    wallet, transactions, withdrawals = await asyncio.gather(
        visitor.backend.get("wallet", "/api/wallets/me"),
        visitor.backend.get("wallet", "/api/wallets/me/transactions", limit=50),
        visitor.backend.get("wallet", "/api/wallets/me/withdrawals", limit=20),
    )
    context = page_context(visitor, values, error, status_code)
    if context["notice"]:  # the only thing saved here: a withdrawal asked for
        context["notice"] = visitor.t("wallet.requested")
    return render(
        visitor,
        "account/wallet.html",
        wallet=wallet,
        transactions=transactions["items"],
        withdrawals=withdrawals["items"],
        banks=BANKS,
        **context,
    )


@router.get("/wallet")
async def wallet(visitor: Buyer) -> Response:
    return await _wallet_page(visitor)


@router.post("/wallet/withdrawals")
async def withdraw(visitor: Buyer, form: Form) -> Response:
    values = form_values(form)
    amount = int_field(form, "amount")
    if amount is None:
        return await _wallet_page(
            visitor, values=values, error=visitor.t("error.invalid_number"), status_code=422
        )
    body = {
        "amount": amount,
        "bankCode": values.get("bankCode", ""),
        "accountNumber": values.get("accountNumber", "").strip(),
        "accountHolderName": values.get("accountHolderName", "").strip(),
    }
    return await send_form(
        visitor, _wallet_page, "/me/wallet", "wallet", "/api/wallets/me/withdrawals", body
    )


@router.get("/orders")
async def orders(visitor: Buyer) -> Response:
    page = await visitor.backend.get("order", "/api/orders", limit=50)
    return render(visitor, "account/orders.html", orders=page["items"])


@router.get("/orders/{order_id}")
async def order(visitor: Buyer, order_id: str) -> Response:
    order, shipments = await asyncio.gather(
        visitor.backend.get("order", f"/api/orders/{order_id}"),
        visitor.backend.get("logistics", "/api/shipments", orderId=order_id, limit=5),
    )
    shipment = None
    if shipments["items"]:
        first = shipments["items"][0]
        shipment = await visitor.backend.get("logistics", f"/api/shipments/{first['id']}")
    return render(visitor, "account/order.html", order=order, shipment=shipment)


# Addresses -----------------------------------------------------------------------------------


async def _addresses_page(
    visitor, *, values=None, error=None, status_code=200, editing=None
) -> Response:
    """The addresses, with the form adding one, or editing the one `editing` names (filled in
    with it until the person has typed)."""
    addresses = await visitor.backend.get("address", "/api/addresses")
    if editing and values is None:
        values = next((a for a in addresses if a["id"] == editing), None)
    return render(
        visitor,
        "account/addresses.html",
        addresses=addresses,
        editing=editing,
        **page_context(visitor, values, error, status_code),
    )


def _address_body(values: dict[str, str]) -> dict[str, Any]:
    body: dict[str, Any] = {name: values.get(name, "").strip() for name in ADDRESS_FIELDS}
    body["notes"] = values.get("notes", "").strip() or None
    body["isDefault"] = values.get("isDefault") == "on"
    return body


@router.get("/addresses")
async def addresses(visitor: Buyer, edit: str | None = None) -> Response:
    return await _addresses_page(visitor, editing=edit)


@router.post("/addresses")
async def add_address(visitor: Buyer, form: Form) -> Response:
    body = _address_body(form_values(form))
    return await send_form(
        visitor, _addresses_page, "/me/addresses", "address", "/api/addresses", body
    )


@router.post("/addresses/{address_id}")
async def edit_address(visitor: Buyer, address_id: str, form: Form) -> Response:
    body = _address_body(form_values(form))
    if not body["isDefault"]:
        del body["isDefault"]  # unticked on an edit: left as it is, not taken away

    def editing_page(visitor: Visitor, **shown: Any) -> Awaitable[Response]:
        return _addresses_page(visitor, editing=address_id, **shown)

    path = f"/api/addresses/{address_id}"
    return await send_form(
        visitor, editing_page, "/me/addresses", "address", path, body, method="PATCH"
    )


@router.post("/addresses/{address_id}/delete")
async def delete_address(visitor: Buyer, address_id: str, _: Form) -> Response:
    path = f"/api/addresses/{address_id}"
    return await send_form(
        visitor, _addresses_page, "/me/addresses", "address", path, method="DELETE"
    )


@router.post("/addresses/{address_id}/default")
async def default_address(visitor: Buyer, address_id: str, _: Form) -> Response:
    path = f"/api/addresses/{address_id}/default"
    return await send_form(visitor, _addresses_page, "/me/addresses", "address", path)


# Notifications -------------------------------------------------------------------------------


@router.get("/notifications")
async def notifications(visitor: Buyer) -> Response:
    page, subscriptions = await asyncio.gather(
        visitor.backend.get("notification", "/api/notifications/me", limit=50),
        visitor.backend.get("notification", "/api/notifications/push-subscriptions/me"),
    )
    for subscription in subscriptions:
        # The push service's host names the browser well enough (Chrome: fcm.googleapis.com).
        subscription["pushService"] = urlsplit(subscription["endpoint"]).hostname
    return render(
        visitor,
        "account/notifications.html",
        notifications=page["items"],
        subscriptions=subscriptions,
    )


# Web Push: the page's script subscribes the browser (static/app.js, static/sw.js); the
# subscription is stored in notification-service with the buyer's own token.


@router.get("/push-subscriptions/vapid-public-key")
async def vapid_public_key(visitor: Buyer) -> JSONResponse:
    """The `applicationServerKey` the browser subscribes with."""
    key = await visitor.backend.get("notification", "/api/notifications/push/vapid-public-key")
    return JSONResponse({"publicKey": key["publicKey"]})


@router.post("/push-subscriptions", dependencies=[CsrfHeader])
async def subscribe_push(visitor: Buyer, request: Request) -> JSONResponse:
    """The browser's `PushSubscription.toJSON()`, posted by the page's script."""
    try:
        subscription = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return JSONResponse({"message": visitor.t("push.failed")}, status_code=422)
    try:
        stored = await visitor.backend.post(
            "notification", "/api/notifications/push-subscriptions", subscription
        )
    except DomainError as exc:
        return JSONResponse({"message": visitor.refusal(exc)}, status_code=exc.status)
    return JSONResponse({**stored, "message": visitor.t("push.on")}, status_code=201)


@router.post("/push-subscriptions/{subscription_id}/delete")
async def unsubscribe_push(visitor: Buyer, subscription_id: str, _: Form) -> Response:
    await visitor.backend.send(
        "DELETE", "notification", f"/api/notifications/push-subscriptions/{subscription_id}"
    )
    return RedirectResponse("/me/notifications", status_code=303)


@router.post("/notifications/{notification_id}/read")
async def read_notification(visitor: Buyer, notification_id: str, _: Form) -> Response:
    await visitor.backend.post("notification", f"/api/notifications/{notification_id}/read")
    return RedirectResponse("/me/notifications", status_code=303)
