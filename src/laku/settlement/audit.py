"""settlement-service's part of `laku audit`: the ledger balanced, and the settlements listed
for the check of each one's total against payment-service's released escrow."""

import uuid

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from laku.core.audit import InvariantOut, checked_rows, keyed_page, total
from laku.settlement.models import EscrowRefund, FactorySettlement, LedgerEntry, LedgerLine
from laku.settlement.rules import EscrowRefundStatus
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
    return await checked_rows(
        session,
        "settlement.ledger_entries_balanced",
        per_entry,
        key=per_entry.c.id,
        broken=(per_entry.c.lines == 0) | (per_entry.c.debits != per_entry.c.credits),
        figures={
            "entries": func.count(),
            "lines": total(per_entry.c.lines),
            "debits": total(per_entry.c.debits),
            "credits": total(per_entry.c.credits),
        },
        describe=lambda row: (
            f"{row.id} (debits {row.debits}, credits {row.credits} in {row.lines} lines)"
        ),
    )


async def audit(session: AsyncSession) -> list[InvariantOut]:
    """Every ledger entry balanced."""
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
            EscrowRefund.status == EscrowRefundStatus.RECEIVABLE.value,
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
    return await keyed_page(
        session, query, FactorySettlement.id, AuditSettlementOut, after=after, limit=limit
    )
