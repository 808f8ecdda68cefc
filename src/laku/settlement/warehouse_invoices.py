"""A paid warehouse invoice in the ledger: the goods and their inbound shipping go into
inventory, the PPN becomes input tax, and cash leaves the bank. Posted once per invoice (its
reference is unique), however often warehouse-service reports the payment."""

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from laku.core.errors import Conflict
from laku.settlement.ledger import Line, post_entry
from laku.settlement.models import LedgerEntry, LedgerLine
from laku.settlement.rules import LedgerEntryKind
from laku.settlement.schemas import LedgerEntryOut, LedgerLineOut, WarehouseInvoicePaid

INVENTORY = "inventory"
PPN_INPUT = "ppn_input"
CASH_BANK = "cash_bank"


def reference(paid: WarehouseInvoicePaid) -> str:
    return f"warehouse-invoice:{paid.invoice_id}"


async def record_paid(
    session: AsyncSession, paid: WarehouseInvoicePaid
) -> tuple[LedgerEntryOut, bool]:
    """The invoice's entry, and whether this call posted it (False: posted before)."""
    if paid.goods_amount + paid.tax_amount != paid.total_amount:
        raise Conflict(
            "totalAmount must be goodsAmount + taxAmount", code="invoice_amounts_mismatch"
        )
    existing = await _entry(session, reference(paid))
    if existing is not None:
        return existing, False
    await post_entry(
        session,
        LedgerEntryKind.WAREHOUSE_INVOICE_PAID,
        reference(paid),
        [
            Line(INVENTORY, debit=paid.goods_amount),
            Line(PPN_INPUT, debit=paid.tax_amount),
            Line(CASH_BANK, credit=paid.total_amount),
        ],
    )
    try:
        await session.commit()
    except IntegrityError:  # posted by a concurrent report of the same payment
        await session.rollback()
        existing = await _entry(session, reference(paid))
        assert existing is not None
        return existing, False
    entry = await _entry(session, reference(paid))
    assert entry is not None
    return entry, True


async def _entry(session: AsyncSession, entry_reference: str) -> LedgerEntryOut | None:
    entry = await session.scalar(
        select(LedgerEntry).where(LedgerEntry.reference == entry_reference)
    )
    if entry is None:
        return None
    lines = await session.scalars(
        select(LedgerLine).where(LedgerLine.entry_id == entry.id).order_by(LedgerLine.id)
    )
    return LedgerEntryOut(
        id=entry.id,
        kind=LedgerEntryKind(entry.kind),
        reference=entry.reference,
        created_at=entry.created_at,
        lines=[LedgerLineOut.model_validate(line) for line in lines],
    )
