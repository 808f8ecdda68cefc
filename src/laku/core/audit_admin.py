"""The audit endpoints every service with invariants serves under /api/admin/audit, for
admins and settlement-service (`laku audit`): its invariants, and its streams a page at a
time. Clients read them through `laku.core.audit`, which stays free of the app kernel."""

import inspect
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Query
from sqlalchemy.ext.asyncio import AsyncSession

from laku.core.app import DbSession
from laku.core.audit import (
    AUDIT_PAGE_SIZE,
    After,
    AuditOut,
    InvariantOut,
    PageSize,
    Through,
    audit_out,
)
from laku.core.errors import PROBLEM_RESPONSES
from laku.core.security import Auditor

Invariants = Callable[[AsyncSession], Awaitable[Sequence[InvariantOut]]]
# A stream keyed by a reference, read in byte order: (session, after, through, limit).
ReferenceStream = Callable[[AsyncSession, str | None, str | None, int], Awaitable[list[Any]]]
# A stream keyed by a row id: (session, after, limit).
IdStream = Callable[[AsyncSession, uuid.UUID | None, int], Awaitable[list[Any]]]


def admin_audit_router() -> APIRouter:
    return APIRouter(prefix="/api/admin/audit", tags=["audit"], responses=PROBLEM_RESPONSES)


def add_invariants(router: APIRouter, audit: Invariants, path: str = "") -> None:
    """`GET <path>`: the service's invariants, each with its figures and first offenders, as
    `audit` (whose docstring documents it) checks them."""

    async def invariants(_: Auditor, session: DbSession) -> AuditOut:
        return audit_out(await audit(session))

    _add(router, path, invariants, AuditOut, "audit", audit.__doc__)


def add_reference_stream(
    router: APIRouter, path: str, page: ReferenceStream, shape: type[Any]
) -> None:
    """`GET <path>`: the rows of a stream whose reference is in (after, through], in byte
    order, a page at a time, as `page` (whose docstring documents it) reads them."""

    async def stream(
        _: Auditor,
        session: DbSession,
        after: After = None,
        through: Through = None,
        limit: PageSize = AUDIT_PAGE_SIZE,
    ) -> list[Any]:
        return await page(session, after, through, limit)

    _add(router, path, stream, list[shape], page.__name__, page.__doc__)


def add_id_stream(
    router: APIRouter,
    path: str,
    page: IdStream,
    shape: type[Any],
    page_size: int = AUDIT_PAGE_SIZE,
) -> None:
    """`GET <path>`: the rows of a stream by id after `after`, a page at a time, as `page`
    (whose docstring documents it) reads them."""

    async def stream(
        _: Auditor,
        session: DbSession,
        after: Annotated[uuid.UUID | None, Query()] = None,
        limit: PageSize = page_size,
    ) -> list[Any]:
        return await page(session, after, limit)

    _add(router, path, stream, list[shape], page.__name__, page.__doc__)


def _add(
    router: APIRouter,
    path: str,
    endpoint: Callable[..., Awaitable[Any]],
    response_model: Any,
    name: str,
    description: str | None,
) -> None:
    router.add_api_route(
        path,
        endpoint,
        methods=["GET"],
        response_model=response_model,
        name=name,
        description=inspect.cleandoc(description or ""),
    )
