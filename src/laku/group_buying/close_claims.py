"""Which process closes which session: a closer claims one session past its end time (one
UPDATE ... FOR UPDATE SKIP LOCKED) with a lease it renews while it works, so two closes at the
same moment, in one process or several, never both close it, and a process that dies mid-close
leaves it to the next run once its lease has passed."""

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import structlog
from sqlalchemy import func, or_, select, update

from laku.core.db import Database
from laku.group_buying.models import GroupBuyingSession
from laku.group_buying.rules import OPEN_STATUSES

log = structlog.get_logger()


@dataclass(frozen=True)
class Claim:
    session_id: uuid.UUID
    session_code: str
    token: uuid.UUID


async def claim_due_session(db: Database, lease: timedelta) -> Claim | None:
    """One session due to close that no live closer holds, held now for `lease`."""
    sessions = GroupBuyingSession
    due = (
        select(sessions.id)
        .where(
            sessions.status.in_(list(OPEN_STATUSES)),
            sessions.end_time <= func.now(),
            or_(
                sessions.close_claimed_until.is_(None),
                sessions.close_claimed_until < func.now(),
            ),
        )
        .order_by(sessions.end_time)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    token = uuid.uuid4()
    async with db.sessions.begin() as session:
        claimed = (
            await session.execute(
                update(sessions)
                .where(sessions.id == due)
                .values(close_claimed_until=func.now() + lease, close_claim_token=token)
                .returning(sessions.id, sessions.session_code)
                .execution_options(synchronize_session=False)
            )
        ).first()
    return Claim(claimed.id, claimed.session_code, token) if claimed else None


@contextlib.asynccontextmanager
async def renewing(db: Database, claim: Claim, lease: timedelta) -> AsyncIterator[None]:
    """Keeps the claim while the close works, however long its calls take."""
    renewal = asyncio.create_task(_renew(db, claim, lease))
    try:
        yield
    finally:
        renewal.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewal


async def _renew(db: Database, claim: Claim, lease: timedelta) -> None:
    while True:
        await asyncio.sleep(lease.total_seconds() / 3)
        try:
            async with db.sessions.begin() as session:
                await session.execute(
                    update(GroupBuyingSession)
                    .where(
                        GroupBuyingSession.id == claim.session_id,
                        GroupBuyingSession.close_claim_token == claim.token,
                    )
                    .values(close_claimed_until=func.now() + lease)
                )
        except Exception:
            log.exception("close_claim_not_renewed", session_id=str(claim.session_id))
