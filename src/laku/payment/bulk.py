"""What the calls closing a group buy in bulk share (refunds, escrow release, expiry): a group
of 10,000 is closed in a few calls, so each call handles thousands of payments with a handful
of statements, never one per payment.

Each call locks the payments it names (in id order, so concurrent calls cannot deadlock),
checks all of them, then changes all of them in one transaction or none. What must reach
wallet-service or Xendit is enqueued in the outbox in that transaction, so the call answers at
once and the delivery, retried until it succeeds, happens exactly when the change does.
"""

import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Row, any_, bindparam, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from laku.core.errors import NotFound
from laku.payment.models import Payment

# How many offending payments an error names; the rest are counted.
_NAMED_IN_ERRORS = 10


def among(column: InstrumentedAttribute[Any], values: Sequence[Any]) -> ColumnElement[bool]:
    """`column = ANY(:values)`: one array parameter however many values there are."""
    return column == any_(bindparam(None, list(values), type_=ARRAY(column.type)))


def named(problems: Sequence[str]) -> str:
    """The first offenders, for an error's detail."""
    shown = ", ".join(problems[:_NAMED_IN_ERRORS])
    more = len(problems) - _NAMED_IN_ERRORS
    return f"{shown} and {more} more" if more > 0 else shown


async def locked(
    session: AsyncSession, payment_ids: Iterable[uuid.UUID], *columns: Any
) -> dict[uuid.UUID, Row[Any]]:
    """The payments' `columns`, their rows locked until the transaction ends; every payment
    must exist."""
    ids = sorted(set(payment_ids))
    rows = (
        await session.execute(
            select(Payment.id, *columns)
            .where(among(Payment.id, ids))
            .order_by(Payment.id)
            .with_for_update()
        )
    ).all()
    found = {row.id: row for row in rows}
    missing = [str(payment_id) for payment_id in ids if payment_id not in found]
    if missing:
        raise NotFound(f"No such payment: {named(missing)}", code="payment_not_found")
    return found
