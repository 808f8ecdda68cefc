"""Settlements (preview, create, the factory's payout account) and the ledger's balances."""

import asyncio

from fastapi import APIRouter
from fastapi.responses import Response

from laku.core.errors import DomainError
from laku.web.backend import BANKS
from laku.web.pages import Admin, Form, form_values, render
from laku.web.routes.forms import page_context, send_form, wib_input

router = APIRouter(prefix="/admin")


async def settlements_page(
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
        factory_names={f["id"]: f["name"] for f in factories["items"]},
        ledger=ledger,
        preview=preview,
        banks=BANKS,
        **page_context(visitor, values, error, status_code),
    )


@router.get("/settlements")
async def settlements(
    visitor: Admin, factoryId: str = "", periodStart: str = "", periodEnd: str = ""
) -> Response:
    if not (factoryId and periodStart and periodEnd):
        return await settlements_page(visitor)
    values = {"factoryId": factoryId, "periodStart": periodStart, "periodEnd": periodEnd}
    try:
        preview = await visitor.backend.get(
            "settlement",
            "/api/settlements/preview",
            factoryId=factoryId,
            periodStart=wib_input(periodStart),
            periodEnd=wib_input(periodEnd),
        )
    except DomainError as exc:
        return await settlements_page(
            visitor, values=values, error=visitor.refusal(exc), status_code=exc.status
        )
    return await settlements_page(visitor, values=values, preview=preview)


@router.post("/settlements")
async def create_settlement(visitor: Admin, form: Form) -> Response:
    values = form_values(form)
    body = {
        "factoryId": values.get("factoryId", ""),
        "periodStart": wib_input(values.get("periodStart", "")),
        "periodEnd": wib_input(values.get("periodEnd", "")),
    }
    return await send_form(
        visitor, settlements_page, "/admin/settlements", "settlement", "/api/settlements", body
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
    return await send_form(
        visitor,
        settlements_page,
        "/admin/settlements",
        "settlement",
        f"/api/settlements/payout-accounts/{factory_id}",
        body,
        method="PUT",
    )
