"""settlement-service's part of `laku audit`: the ledger balanced, and the settlements listed
for the check of each one's total against payment-service's released escrow."""

import uuid

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from laku.core.audit import OFFENDERS_SHOWN, InvariantOut, invariant
from laku.settlement.models import EscrowRefund, FactorySettlement, LedgerEntry, LedgerLine
from laku.settlement.schemas import AuditSettlementOut


async def ledger_balanced(session: AsyncSession) -> InvariantOut:
    """Every entry has lines, and its debits equal its credits (the database refuses anything
    else at commit; this finds what got past it)."""
    per_entry = (
        select(
            LedgerEntry.id,
            func.count(LedgerLine.id).label("lines"),
            func.coalesce(func.sum(LedgerLine.debit), 0).label("debits"),
            func.coalesce(func.sum(LedgerLine.credit), 0).label("credits"),
        )
        .outerjoin(LedgerLine, LedgerLine.entry_id == LedgerEntry.id)
        .group_by(LedgerEntry.id)
        .subquery()
    )
    broken = (per_entry.c.lines == 0) | (per_entry.c.debits != per_entry.c.credits)
    totals = (
        await session.execute(
            select(
                func.count(),
                func.coalesce(func.sum(per_entry.c.lines), 0),
                func.coalesce(func.sum(per_entry.c.debits), 0),
                func.coalesce(func.sum(per_entry.c.credits), 0),
                func.count().filter(broken),
            )
        )
    ).one()
    offenders = (
        await session.execute(
            select(per_entry).where(broken).order_by(per_entry.c.id).limit(OFFENDERS_SHOWN)
        )
    ).all()
    return invariant(
        "settlement.ledger_entries_balanced",
        {
            "entries": totals[0],
            "lines": int(totals[1]),
            "debits": int(totals[2]),
            "credits": int(totals[3]),
        },
        [
            f"{row.id} (debits {row.debits}, credits {row.credits} in {row.lines} lines)"
            for row in offenders
        ],
        violations=totals[4],
    )


async def audit(session: AsyncSession) -> list[InvariantOut]:
    return [await ledger_balanced(session)]


async def settlements_page(
    session: AsyncSession, after: uuid.UUID | None, limit: int
) -> list[AuditSettlementOut]:
    """Settlements by id after `after`, each with the refunds it had counted that became
    receivables (payment-service's released escrow no longer includes them)."""
    receivable = (
        select(func.coalesce(func.sum(EscrowRefund.amount), 0))
        .where(
            EscrowRefund.settlement_id == FactorySettlement.id,
            EscrowRefund.status == "receivable",
        )
        .scalar_subquery()
    )
    query = select(
        FactorySettlement.id,
        FactorySettlement.factory_id,
        FactorySettlement.period_start,
        FactorySettlement.period_end,
        FactorySettlement.total_amount,
        receivable.label("receivable_amount"),
    )
    if after is not None:
        query = query.where(FactorySettlement.id > after)
    rows = await session.execute(query.order_by(FactorySettlement.id).limit(limit))
    return [AuditSettlementOut.model_validate(row, from_attributes=True) for row in rows]
