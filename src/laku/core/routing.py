"""Route plumbing the services' routes.py share: what the app wired, reached as a dependency;
the outbox relay woken once an operation has left it work; the declarations of operations
that create their thing once or answer no body; the list filters several services take; and
a wire model read off a row or result that lacks some of its fields."""

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Query, Request, Response, status
from fastapi.types import DecoratedCallable
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from laku.core.app import DbSession


def app_state(name: str) -> Callable[[Request], Awaitable[Any]]:
    """A dependency answering what the app wired as `app.state.<name>` (a client, a workflow):
    `Annotated[ProductClient, Depends(app_state("product_client"))]`."""

    async def wired(request: Request) -> Any:
        return getattr(request.app.state, name)

    return wired


async def _outbox_session(request: Request, session: DbSession) -> AsyncIterator[AsyncSession]:
    """The request's session, for an operation whose transaction leaves the outbox work: once
    the operation has committed and answered, the relay is woken to deliver it now rather than
    at its next poll. An operation that fails wakes nothing."""
    yield session
    request.app.state.outbox_relay.wake()


OutboxSession = Annotated[AsyncSession, Depends(_outbox_session)]


def post_once(
    router: APIRouter,
    path: str,
    model: type[Any],
    made_before: str,
    responses: dict[int | str, dict[str, Any]] | None = None,
) -> Callable[[DecoratedCallable], DecoratedCallable]:
    """A POST that makes its thing once per reference or key: 201 with what this call made, or
    200 (`made_before` says when) with what an earlier call made; the operation answers its
    status with `created_status`."""
    return router.post(
        path,
        response_model=model,
        status_code=status.HTTP_201_CREATED,
        responses={200: {"model": model, "description": made_before}, **(responses or {})},
    )


def created_status(created: bool) -> int:
    """A `post_once` operation's status: 201 if this call made the thing, 200 if one before did."""
    return status.HTTP_201_CREATED if created else status.HTTP_200_OK


# The declaration of an operation that answers 204 and no body.
NO_CONTENT: dict[str, Any] = {
    "status_code": status.HTTP_204_NO_CONTENT,
    "response_class": Response,
}


Wire = TypeVar("Wire", bound=BaseModel)


def from_attributes(model: type[Wire], source: object, **fields: Any) -> Wire:
    """`model` read off the attributes of the same names of `source` (a row, a domain result),
    but for the `fields` given: those it has under another name, or not at all (figures worked
    out, rows of another table)."""
    named = {name: getattr(source, name) for name in model.model_fields if name not in fields}
    return model.model_validate({**named, **fields})


# The list filters more than one service takes, named once as the wire spells them (the web
# front end and the service clients send them so); one left out narrows nothing.
Status = TypeVar("Status")
StatusFilter = Annotated[Status | None, Query(alias="status")]  # StatusFilter[OrderStatus]
FactoryFilter = Annotated[uuid.UUID | None, Query(alias="factoryId")]
ProductFilter = Annotated[uuid.UUID | None, Query(alias="productId")]
UserFilter = Annotated[uuid.UUID | None, Query(alias="userId")]
