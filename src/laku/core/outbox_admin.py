"""What every service with an outbox shows its admins: how much work is waiting, what was
refused for good (dead letters, with their reasons), and a way to requeue one."""

from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from sqlalchemy import Table

from laku.core import outbox
from laku.core.errors import PROBLEM_RESPONSES, NotFound
from laku.core.schemas import LongPaging, Page, RowIdPath, SingleLine, WireModel
from laku.core.security import AdminPrincipal


class OutboxSummaryOut(WireModel):
    pending: int
    oldest_pending_age_seconds: float | None
    dead_letters: int
    dead_letters_by_kind: dict[str, int]


class OutboxEntryOut(WireModel):
    id: int
    kind: str
    status: Literal["pending", "delivered", "dead_lettered"]
    payload: dict[str, Any]
    attempts: int
    # Why it was refused for good (dead letters only).
    reason: str | None
    last_error: str | None
    created_at: datetime
    next_attempt_at: datetime
    delivered_at: datetime | None
    dead_lettered_at: datetime | None


def _entry_out(entry: outbox.OutboxEntry) -> OutboxEntryOut:
    status: Literal["pending", "delivered", "dead_lettered"] = (
        "dead_lettered"
        if entry.dead_lettered_at is not None
        else "delivered"
        if entry.delivered_at is not None
        else "pending"
    )
    fields = asdict(entry)
    return OutboxEntryOut(status=status, reason=fields.pop("dead_letter_reason"), **fields)


def outbox_admin_router(table: Table) -> APIRouter:
    router = APIRouter(prefix="/api/admin/outbox", tags=["outbox"], responses=PROBLEM_RESPONSES)

    @router.get("", response_model=OutboxSummaryOut)
    async def outbox_summary(_: AdminPrincipal, request: Request) -> OutboxSummaryOut:
        """Rows waiting for delivery (and how long the oldest has waited), and dead letters
        by kind."""
        async with request.app.state.db.sessions() as session:
            summary = await outbox.summarize(session, table)
        return OutboxSummaryOut(
            pending=summary.pending,
            oldest_pending_age_seconds=summary.oldest_pending_age_seconds,
            dead_letters=sum(summary.dead_letters_by_kind.values()),
            dead_letters_by_kind=summary.dead_letters_by_kind,
        )

    @router.get("/dead-letters", response_model=Page[OutboxEntryOut])
    async def list_dead_letters(
        _: AdminPrincipal,
        request: Request,
        paging: LongPaging,
        kind: Annotated[Annotated[str, SingleLine] | None, Query(max_length=64)] = None,
    ) -> Page[OutboxEntryOut]:
        """Work refused for good, newest first, with why; never retried unless requeued."""
        async with request.app.state.db.sessions() as session:
            entries, total = await outbox.dead_letters(
                session, table, kind=kind, limit=paging.limit, offset=paging.offset
            )
        return Page.of([_entry_out(entry) for entry in entries], total, paging)

    @router.post("/dead-letters/{row_id}/retry", response_model=OutboxEntryOut)
    async def retry_dead_letter(row_id: RowIdPath, _: AdminPrincipal, request: Request):
        """Put a dead letter back in line, due now (after what refused it was put right). A
        row no longer dead-lettered (requeued already, or delivered) is answered as it is."""
        async with request.app.state.db.sessions() as session:
            entry = await outbox.requeue(session, table, row_id)
        if entry is None:
            raise NotFound(f"No outbox row {row_id}", code="outbox_row_not_found")
        request.app.state.outbox_relay.wake()
        return _entry_out(entry)

    return router
