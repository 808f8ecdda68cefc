"""Route plumbing the services' routes.py share: what the app wired, reached as a dependency;
the outbox relay woken once an operation has left it work; and the declarations of operations
that create their thing once or answer no body."""

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response, status
from fastapi.types import DecoratedCallable
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
