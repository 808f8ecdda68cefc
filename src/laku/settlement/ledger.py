"""The double-entry ledger: entries of balanced lines, and the balance of every account (see
`rules.py` for the accounts). The database refuses an entry whose debits and credits differ when
the transaction commits (a deferred constraint trigger, see the migration), so no code path can
leave the ledger unbalanced."""

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from laku.settlement.models import LedgerEntry, LedgerLine
from laku.settlement.rules import LedgerEntryKind
from laku.settlement.schemas import AccountBalanceOut, LedgerBalancesOut


@dataclass(frozen=True)
class Line:
    account: str
    debit: int = 0
    credit: int = 0


def transfer(debit_account: str, credit_account: str, amount: int) -> list[Line]:
    """The two lines of `amount` moved from `credit_account` to `debit_account`."""
    return [Line(debit_account, debit=amount), Line(credit_account, credit=amount)]


async def post_entry(
    session: AsyncSession,
    kind: LedgerEntryKind,
    reference: str,
    lines: Sequence[Line],
    *,
    settlement_id: uuid.UUID | None = None,
) -> uuid.UUID:
    """Add an entry and its lines (those of zero left out) to the caller's transaction. The
    database refuses the commit unless the entry's debits equal its credits."""
    entry_id = uuid.uuid4()
    await session.execute(
        insert(LedgerEntry).values(
            id=entry_id, kind=kind.value, reference=reference, settlement_id=settlement_id
        )
    )
    rows = [
        {"entry_id": entry_id, "account": line.account, "debit": line.debit, "credit": line.credit}
        for line in lines
        if line.debit or line.credit
    ]
    if rows:  # an entry without lines is refused at commit like any unbalanced one
        await session.execute(insert(LedgerLine), rows)
    return entry_id


async def balances(session: AsyncSession) -> LedgerBalancesOut:
    rows = (
        await session.execute(
            select(
                LedgerLine.account,
                func.sum(LedgerLine.debit).label("debit"),
                func.sum(LedgerLine.credit).label("credit"),
            )
            .group_by(LedgerLine.account)
            .order_by(LedgerLine.account)
        )
    ).all()
    accounts = [
        AccountBalanceOut(account=row.account, debit=int(row.debit), credit=int(row.credit))
        for row in rows
    ]
    return LedgerBalancesOut(
        accounts=accounts,
        total_debit=sum(a.debit for a in accounts),
        total_credit=sum(a.credit for a in accounts),
    )
