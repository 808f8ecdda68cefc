"""Reading rows the way every service's domain modules do: one that must be there, or one page
of a list and how long the whole list is."""

from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import QueryableAttribute

from laku.core.errors import DomainError

Row = TypeVar("Row")


def found(row: Row | None, missing: DomainError) -> Row:
    """`row`, which the caller needs: `missing` (a 404, usually) is raised when it is None."""
    if row is None:
        raise missing
    return row


async def page(
    session: AsyncSession,
    query: Select[tuple[Row]],
    *order_by: ColumnElement[Any] | QueryableAttribute[Any],
    limit: int,
    offset: int,
) -> tuple[list[Row], int]:
    """The rows of `query` in `order_by`'s order from `offset`, `limit` at the most, and how
    many rows `query` has in all. `order_by` should end in a unique column, so that pages
    neither repeat nor skip a row."""
    total = await session.scalar(select(func.count()).select_from(query.subquery()))
    rows = await session.scalars(query.order_by(*order_by).limit(limit).offset(offset))
    return list(rows), total or 0
