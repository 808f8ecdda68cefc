"""What every service's audit endpoint answers (`GET /api/admin/audit`) and `laku audit`
prints: invariants with their figures, and the first few rows that break each one; and the
queries every service's audit makes: an invariant checked row by row in SQL, and a page of a
stream by key."""

from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, TypeVar

from fastapi import Query
from pydantic import BaseModel, Field
from sqlalchemy import ColumnElement, Row, Select, Subquery, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from laku.core.http import ServiceClient
from laku.core.schemas import SingleLine, WireModel

Model = TypeVar("Model", bound=BaseModel)

# A violation names this many offending rows; the rest are counted.
OFFENDERS_SHOWN = 5
# Rows per page of an audit stream (keyset pagination on the stream's key); the rows in the
# range of references one page spans are read in pages of up to the maximum, usually one.
AUDIT_PAGE_SIZE = 5_000
MAX_AUDIT_PAGE_SIZE = 10_000


class InvariantOut(WireModel):
    """One invariant: whether it holds, its figures (counts and rupiah), how many rows break
    it and the first few of them."""

    name: str
    ok: bool
    figures: dict[str, int]
    violations: int = 0
    offenders: list[str] = Field(default_factory=list)


class AuditOut(WireModel):
    ok: bool
    invariants: list[InvariantOut]


def invariant(
    name: str, figures: dict[str, int], offenders: Sequence[str], violations: int | None = None
) -> InvariantOut:
    """`offenders`: every row that breaks it, or the first few when `violations` counts them."""
    violations = len(offenders) if violations is None else violations
    return InvariantOut(
        name=name,
        ok=violations == 0,
        figures=figures,
        violations=violations,
        offenders=list(offenders[:OFFENDERS_SHOWN]),
    )


def total(column: ColumnElement[Any]) -> ColumnElement[Any]:
    """The sum of `column`, 0 over no rows."""
    return func.coalesce(func.sum(column), 0)


async def checked_rows(
    session: AsyncSession,
    name: str,
    rows: Subquery,
    *,
    key: ColumnElement[Any],
    broken: ColumnElement[bool],
    figures: Mapping[str, ColumnElement[Any]],
    describe: Callable[[Row[Any]], str],
) -> InvariantOut:
    """An invariant checked row by row over `rows`: its `figures` (aggregates over every row),
    how many rows are `broken`, and the first few of those by `key`, each as `describe` says."""
    totals = (
        await session.execute(
            select(*figures.values(), func.count().filter(broken)).select_from(rows)
        )
    ).one()
    offenders = (
        await session.execute(select(rows).where(broken).order_by(key).limit(OFFENDERS_SHOWN))
    ).all()
    return invariant(
        name,
        {figure: int(value) for figure, value in zip(figures, totals, strict=False)},
        [describe(row) for row in offenders],
        violations=totals[-1],
    )


async def keyed_page(
    session: AsyncSession,
    query: Select[Any],
    key: ColumnElement[Any],
    shape: type[Model],
    *,
    after: Any | None,
    through: Any | None = None,
    limit: int,
) -> list[Model]:
    """One page of an audit stream: the rows of `query` whose `key` is in (after, through],
    in key order, as `shape`."""
    if after is not None:
        query = query.where(key > after)
    if through is not None:
        query = query.where(key <= through)
    rows = await session.execute(query.order_by(key).limit(limit))
    return [shape.model_validate(row, from_attributes=True) for row in rows]


def audit_out(invariants: Sequence[InvariantOut]) -> AuditOut:
    return AuditOut(ok=all(i.ok for i in invariants), invariants=list(invariants))


After = Annotated[
    Annotated[str, SingleLine] | None,
    Query(max_length=200, description="Rows whose key is above this (exclusive)"),
]
Through = Annotated[
    Annotated[str, SingleLine] | None,
    Query(max_length=200, description="Rows whose key is up to this (inclusive)"),
]
PageSize = Annotated[int, Query(ge=1, le=MAX_AUDIT_PAGE_SIZE)]


def page_params(after: str | None, through: str | None, limit: int) -> dict[str, str | int]:
    """The query of one audit page: rows whose key is in (after, through]."""
    params: dict[str, str | int] = {"limit": limit}
    if after is not None:
        params["after"] = after
    if through is not None:
        params["through"] = through
    return params


class AuditedClient(ServiceClient):
    """The client of a service that audits itself: its invariants (`laku audit`) and pages of
    the streams other audits compare with theirs."""

    AUDIT_PATH = "/api/admin/audit"

    async def audit(self) -> AuditOut:
        """The service's own invariants."""
        return await self.get_model(self.AUDIT_PATH, AuditOut)

    async def audit_page(
        self,
        stream: str,
        item_type: type[Model],
        after: str | None,
        through: str | None = None,
        limit: int = AUDIT_PAGE_SIZE,
    ) -> list[Model]:
        """A page of the stream `stream`: its rows whose key is in (after, through]."""
        return await self.get_list(
            f"/api/admin/audit/{stream}", item_type, params=page_params(after, through, limit)
        )
