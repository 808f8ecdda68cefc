"""The storefront: open group buys, one group buy's page, joining it, and signing in and out."""

import asyncio
import uuid
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from laku.core.errors import DomainError
from laku.core.http import ServiceCallError
from laku.web import formatting
from laku.web.backend import Backend
from laku.web.cache import PublicCache
from laku.web.config import get_web_settings
from laku.web.i18n import LANGUAGES
from laku.web.login_session import LoginTokens, clear_login_cookies, set_login_cookies
from laku.web.pages import (
    AnyVisitor,
    Buyer,
    Form,
    Visitor,
    form_values,
    int_field,
    render,
    safe_next,
)
from laku.web.security import LANGUAGE_COOKIE, REFRESH_COOKIE

router = APIRouter()
public = PublicCache()

SESSIONS_TTL_SECONDS = 2.0  # progress on the home page is at most this old
CATALOG_TTL_SECONDS = 30.0
LIVE_TTL_SECONDS = 1.0
TIERS = (25, 50, 75, 100)


async def open_sessions(visitor: Visitor) -> list[dict[str, Any]]:
    async def load() -> list[dict[str, Any]]:
        page = await visitor.backend.get("group-buying", "/api/group-buying", limit=100)
        return page["items"]

    return await public.get(("sessions",), SESSIONS_TTL_SECONDS, load)


async def product_detail(visitor: Visitor, product_id: str) -> dict[str, Any] | None:
    async def load() -> dict[str, Any] | None:
        # Asked anonymously: what every shopper may see (never an admin's view of a draft).
        anonymous = Backend(visitor.backend.http, visitor.backend.settings)
        try:
            return await anonymous.get("product", f"/api/products/{product_id}")
        except ServiceCallError as exc:
            if exc.status == 404:
                return None
            raise

    return await public.get(("product", product_id), CATALOG_TTL_SECONDS, load)


async def categories(visitor: Visitor) -> list[dict[str, Any]]:
    async def load() -> list[dict[str, Any]]:
        return await visitor.backend.get("product", "/api/categories")

    return await public.get(("categories",), CATALOG_TTL_SECONDS, load)


async def matching_products(visitor: Visitor, q: str, category: str) -> set[str]:
    async def load() -> set[str]:
        page = await visitor.backend.get(
            "product", "/api/products", q=q or None, categoryId=category or None, limit=100
        )
        return {item["id"] for item in page["items"]}

    return await public.get(("products", q, category), CATALOG_TTL_SECONDS, load)


def _card(session: dict[str, Any], product: dict[str, Any] | None, lang: str) -> dict[str, Any]:
    images = (product or {}).get("images") or []
    left = formatting.seconds_left(session["endTime"])
    return {
        **session,
        "image": images[0]["url"] if images else None,
        "base_price": (product or {}).get("basePrice"),
        "seconds_left": left,
        "time_left": formatting.duration(left, lang),
        "fill_percent": min(100, session["fillBasisPoints"] // 100),
    }


@router.get("/")
async def home(visitor: AnyVisitor, q: str = "", category: str = "") -> Response:
    q = q.strip()[:100]
    try:
        uuid.UUID(category)
    except ValueError:
        category = ""
    sessions, all_categories = await asyncio.gather(open_sessions(visitor), categories(visitor))
    if q or category:
        wanted = await matching_products(visitor, q, category)
        sessions = [s for s in sessions if s["productId"] in wanted]
    products = await asyncio.gather(*(product_detail(visitor, s["productId"]) for s in sessions))
    cards = [_card(s, p, visitor.lang) for s, p in zip(sessions, products, strict=True)]
    return render(
        visitor, "home.html", cards=cards, categories=all_categories, q=q, category=category
    )


def _ladder(session: dict[str, Any]) -> list[dict[str, Any]]:
    moq = session["targetMoq"]
    return [
        {
            "tier": tier,
            "price": session[f"priceTier{tier}"],
            "from_units": -(-moq * tier // 100) if tier > 25 else 0,
            "current": session["currentTier"] == tier,
        }
        for tier in TIERS
    ]


def _next_tier(session: dict[str, Any]) -> dict[str, Any] | None:
    ladder = _ladder(session)
    following = [step for step in ladder if step["tier"] > session["currentTier"]]
    return following[0] if following else None


async def _group_buy(visitor: Visitor, code: str) -> tuple[dict, dict, dict | None]:
    """The session, its variants' stock and its product, as every visitor sees them (at most
    `LIVE_TTL_SECONDS` old: the page's own refresh is every 5 s)."""
    ref = quote(code, safe="")

    async def load() -> tuple[dict, dict]:
        return await asyncio.gather(
            visitor.backend.get("group-buying", f"/api/group-buying/{ref}"),
            visitor.backend.get("group-buying", f"/api/group-buying/{ref}/variant-availability"),
        )

    session, availability = await public.get(("group-buy", code), LIVE_TTL_SECONDS, load)
    product = await product_detail(visitor, session["productId"])
    return session, availability, product


def public_url(request: Request) -> str:
    return (get_web_settings().public_url or str(request.base_url)).rstrip("/")


@router.get("/g/{code}")
async def group_buy(
    visitor: AnyVisitor, code: str, variant: str = "", quantity: str = "1"
) -> Response:
    session, availability, product = await _group_buy(visitor, code)
    return _group_buy_page(
        visitor, session, availability, product, {"variant": variant, "quantity": quantity}
    )


def _group_buy_page(
    visitor: Visitor,
    session: dict,
    availability: dict,
    product: dict | None,
    values: dict[str, str],
    *,
    error: str | None = None,
    status_code: int = 200,
    quote_: dict | None = None,
) -> Response:
    card = _card(session, product, visitor.lang)
    url = f"{public_url(visitor.request)}/g/{session['sessionCode']}"
    share_text = visitor.t(
        "share.text",
        name=session["productName"],
        price=formatting.rupiah(session["currentUnitPrice"]),
        left=card["time_left"],
    )
    return render(
        visitor,
        "group_buy.html",
        status_code=status_code,
        session=card,
        product=product,
        availability=availability,
        ladder=_ladder(session),
        next_tier=_next_tier(session),
        values=values,
        error=error,
        quote=quote_,
        share_url=f"https://wa.me/?text={quote(share_text + ' ' + url)}",
        share_text=share_text,
        page_url=url,
        image_url=card["image"],
    )


@router.get("/g/{code}/live.json")
async def group_buy_live(visitor: AnyVisitor, code: str) -> JSONResponse:
    """What the open page refreshes every few seconds: progress and each variant's stock."""
    session, availability, _ = await _group_buy(visitor, code)
    left = formatting.seconds_left(session["endTime"])
    return JSONResponse(
        {
            "paidQuantity": session["paidQuantity"],
            "buyerCount": session["buyerCount"],
            "quantityToMoq": session["quantityToMoq"],
            "fillPercent": min(100, session["fillBasisPoints"] // 100),
            "currentTier": session["currentTier"],
            "currentUnitPrice": formatting.rupiah(session["currentUnitPrice"]),
            "secondsLeft": left,
            "joinable": availability["joinable"],
            "variants": [
                {
                    "variantId": v["variantId"],
                    "availableQuantity": v["availableQuantity"],
                    "canJoin": v["canJoin"],
                    "unitPrice": formatting.rupiah(v["unitPrice"]),
                }
                for v in availability["variants"]
            ],
        },
        headers={"cache-control": "no-store"},
    )


def _chosen(availability: dict, variant_id: str) -> dict | None:
    return next((v for v in availability["variants"] if v["variantId"] == variant_id), None)


@router.post("/g/{code}/confirm")
async def confirm_join(visitor: Buyer, code: str, form: Form) -> Response:
    """The server's price for the chosen variant and quantity, before anything is reserved."""
    session, availability, product = await _group_buy(visitor, code)
    values = form_values(form)
    variant = _chosen(availability, values.get("variant", ""))
    quantity = int_field(form, "quantity")
    error = None
    if variant is None or not variant["canJoin"]:
        error = visitor.t("join.pick_variant")
    elif quantity is None or quantity < 1:
        error = visitor.t("error.invalid_number")
    elif quantity > variant["availableQuantity"]:
        error = visitor.t("join.too_many", available=variant["availableQuantity"])
    if error:
        return _group_buy_page(
            visitor, session, availability, product, values, error=error, status_code=422
        )
    quote_ = {
        "variant": variant,
        "quantity": quantity,
        "unit_price": variant["unitPrice"],
        "total_price": variant["unitPrice"] * quantity,
        "key": uuid.uuid4().hex,
    }
    return _group_buy_page(visitor, session, availability, product, values, quote_=quote_)


@router.post("/g/{code}/join")
async def join(visitor: Buyer, code: str, form: Form) -> Response:
    """Reserve and open the payment; the buyer goes on to pay on the payment page. The unit and
    total price the buyer confirmed go with it: the service refuses if the price has moved."""
    values = form_values(form)
    body = {
        "variantId": values.get("variant", ""),
        "quantity": int_field(form, "quantity") or 0,
        "unitPrice": int_field(form, "unitPrice"),
        "totalPrice": int_field(form, "totalPrice"),
    }
    try:
        joined = await visitor.backend.post(
            "group-buying",
            f"/api/group-buying/{quote(code, safe='')}/join",
            body,
            key=values.get("key") or None,
        )
    except DomainError as exc:
        session, availability, product = await _group_buy(visitor, code)
        return _group_buy_page(
            visitor,
            session,
            availability,
            product,
            values,
            error=visitor.refusal(exc),
            status_code=getattr(exc, "status", 409),
        )
    return RedirectResponse(joined["paymentUrl"], status_code=303)


# Signing in and out --------------------------------------------------------------------------


def _home_for(role: str) -> str:
    return {"admin": "/admin", "factory": "/factory"}.get(role, "/")


@router.get("/login")
async def login_page(visitor: AnyVisitor, next: str = "/") -> Response:
    return render(visitor, "login.html", values={"next": safe_next(next)})


def _refused(visitor: Visitor, template: str, values: dict[str, str], exc: DomainError) -> Response:
    """The form again, with the service's refusal and what was typed (never the password)."""
    return render(
        visitor, template, status_code=exc.status, values=values, error=visitor.refusal(exc)
    )


@router.post("/login")
async def login(visitor: AnyVisitor, form: Form) -> Response:
    values = form_values(form)
    try:
        tokens = await visitor.backend.post(
            "auth",
            "/api/auth/login",
            {"email": values.get("email", ""), "password": form.get("password") or ""},
        )
    except DomainError as exc:
        return _refused(visitor, "login.html", values, exc)
    principal = await visitor.request.app.state.token_verifier.verify(tokens["accessToken"])
    target = safe_next(values.get("next"), _home_for(principal.role.value))
    if target == "/" and principal.role.value != "buyer":
        target = _home_for(principal.role.value)
    response = RedirectResponse(target, status_code=303)
    set_login_cookies(response, LoginTokens.from_answer(tokens))
    return response


@router.get("/register")
async def register_page(visitor: AnyVisitor) -> Response:
    return render(visitor, "register.html", values={})


@router.post("/register")
async def register(visitor: AnyVisitor, form: Form) -> Response:
    values = form_values(form)
    password = form.get("password") or ""
    body = {"email": values.get("email", ""), "name": values.get("name", ""), "password": password}
    if values.get("phone"):
        body["phone"] = values["phone"]
    try:
        await visitor.backend.post("auth", "/api/auth/register", body)
        tokens = await visitor.backend.post(
            "auth", "/api/auth/login", {"email": body["email"], "password": password}
        )
    except DomainError as exc:
        return _refused(visitor, "register.html", values, exc)
    response = RedirectResponse("/", status_code=303)
    set_login_cookies(response, LoginTokens.from_answer(tokens))
    return response


@router.post("/logout")
async def logout(visitor: AnyVisitor, form: Form) -> Response:
    """Ends the session at auth (its tokens are refused everywhere within seconds), not only
    in this browser."""
    cookies = visitor.request.cookies
    await visitor.request.app.state.login_renewer.end(
        visitor.backend.token, cookies.get(REFRESH_COOKIE)
    )
    response = RedirectResponse("/", status_code=303)
    clear_login_cookies(response)
    return response


@router.get("/language/{lang}")
async def language(lang: str, next: str = "/") -> Response:
    response = RedirectResponse(safe_next(next), status_code=303)
    if lang in LANGUAGES:
        response.set_cookie(LANGUAGE_COOKIE, lang, max_age=365 * 86_400, samesite="lax", path="/")
    return response
