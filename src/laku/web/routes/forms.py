"""How an admin page takes a form: the service's answer, else its refusal on the same page with
what was typed."""

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Protocol

from fastapi import APIRouter
from fastapi.responses import RedirectResponse, Response

from laku.core.errors import DomainError
from laku.web.formatting import WIB
from laku.web.pages import Admin, Form, Visitor, form_values, render


class FormPage(Protocol):
    """A page that shows a form: again with the refusal and what was typed when it failed.
    A page under a path with parameters (`/products/{product_id}`) reads them off the request."""

    def __call__(
        self,
        visitor: Visitor,
        *,
        values: dict[str, str] | None = None,
        error: str | None = None,
        status_code: int = 200,
    ) -> Awaitable[Response]: ...


def page_context(
    visitor: Visitor, values: dict[str, str] | None, error: str | None, status_code: int
) -> dict[str, Any]:
    done = visitor.request.query_params.get("done") == "1" and error is None
    return {
        "values": values or {},
        "error": error,
        "notice": visitor.t("common.done") if done else None,
        "status_code": status_code,
    }


async def submit(
    visitor: Visitor, form_page: FormPage, call: Callable[[], Awaitable[Any]], back: str
) -> Response:
    """Do the call; on success back to the page (303, so a reload posts nothing again), on a
    refusal the page again with the message and what was typed."""
    try:
        await call()
    except DomainError as exc:
        return await form_page(
            visitor,
            values=form_values(await visitor.request.form()),
            error=visitor.refusal(exc),
            status_code=exc.status if exc.status < 500 else 503,
        )
    separator = "&" if "?" in back else "?"
    return RedirectResponse(f"{back}{separator}done=1", status_code=303)


async def send_form(
    visitor: Visitor,
    form_page: FormPage,
    back: str,
    service: str,
    path: str,
    body: Any = None,
    *,
    method: str = "POST",
) -> Response:
    """`submit` of the one call most forms make: `body` sent to `service`, with the form's own
    idempotency key where it carries one (so a double submit does the work once)."""
    key = (await visitor.request.form()).get("key")
    return await submit(
        visitor,
        form_page,
        lambda: visitor.backend.send(
            method, service, path, body, key=key if isinstance(key, str) else None
        ),
        back,
    )


def listing(template: str, name: str, service: str, path: str, **params: Any) -> FormPage:
    """A page listing one service's page of items (under `name`) with the forms acting on them."""

    async def page(
        visitor: Visitor,
        *,
        values: dict[str, str] | None = None,
        error: str | None = None,
        status_code: int = 200,
    ) -> Response:
        items = await visitor.backend.get(service, path, **params)
        return render(
            visitor,
            template,
            **{name: items["items"] if isinstance(items, dict) else items},
            **page_context(visitor, values, error, status_code),
        )

    return page


def shown_at(router: APIRouter, path: str, form_page: FormPage) -> None:
    """GET `path` shows the page as it is."""

    async def show(visitor: Admin) -> Response:
        return await form_page(visitor)

    router.add_api_route(path, show, methods=["GET"], response_class=Response)


def button(
    router: APIRouter,
    path: str,
    form_page: FormPage,
    service: str,
    target: str,
    *,
    back: str,
) -> None:
    """POST `path` (a form with a button and nothing else) asks `service` to do one thing at
    `target`; both paths are filled in with the page's path parameters."""

    async def press(visitor: Admin, _: Form) -> Response:
        params = visitor.request.path_params
        return await send_form(
            visitor, form_page, back.format(**params), service, target.format(**params)
        )

    router.add_api_route(path, press, methods=["POST"], response_class=Response)


def wib_input(value: str) -> str:
    """An `<input type=datetime-local>` value read as Jakarta time, as ISO 8601 with its offset."""
    try:
        return datetime.fromisoformat(value).replace(tzinfo=WIB).isoformat()
    except ValueError:
        return value
