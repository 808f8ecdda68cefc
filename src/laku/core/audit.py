"""What every service's audit endpoint answers (`GET /api/admin/audit`) and `laku audit`
prints: invariants with their figures, and the first few rows that break each one."""

from collections.abc import Sequence
from typing import Annotated

from fastapi import Query
from pydantic import Field

from laku.core.schemas import SingleLine, WireModel

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
