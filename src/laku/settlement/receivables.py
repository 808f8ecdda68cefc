"""Refunds of escrow a factory was already settled for: what the factory owes back (its
receivable), accounted for exactly once under one lock per factory (see `settlements.py`)."""

import uuid
from collections.abc import Sequence

import structlog
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from laku.payment.client import EscrowReleasedOut
from laku.settlement.ledger import post_entry, transfer
from laku.settlement.models import EscrowRefund, FactorySettlement, LedgerLine
from laku.settlement.rules import (
    ESCROW_RELEASED,
    EscrowRefundStatus,
    LedgerEntryKind,
    factory_receivable,
)
from laku.settlement.schemas import EscrowRefundIn, EscrowRefundOut, EscrowRefundsOut

log = structlog.get_logger()


async def lock_factory(session: AsyncSession, factory_id: uuid.UUID) -> None:
    """Serialise a factory's settlements and the refunds reported against them until the
    transaction ends. An advisory lock: a refund may be reported for a factory that has no
    payout account (no row to lock) yet."""
    await session.execute(
        select(
            func.pg_advisory_xact_lock(func.hashtextextended(f"settlement.factory:{factory_id}", 0))
        )
    )


async def receivable_balance(session: AsyncSession, factory_id: uuid.UUID) -> int:
    """What the factory owes back, by the ledger."""
    balance = await session.scalar(
        select(func.coalesce(func.sum(LedgerLine.debit - LedgerLine.credit), 0)).where(
            LedgerLine.account == factory_receivable(factory_id)
        )
    )
    return int(balance or 0)


async def pending_missed(
    session: AsyncSession, released: EscrowReleasedOut
) -> Sequence[EscrowRefund]:
    """Refunds reported while the period was unsettled that the figures did not take off
    (made after they were read): the settlement pays for them, so they become receivables."""
    netted = {refund.refund_id for refund in released.cancelled_order_refunds}
    pending = await session.scalars(
        select(EscrowRefund)
        .where(
            EscrowRefund.factory_id == released.factory_id,
            EscrowRefund.status == EscrowRefundStatus.PENDING.value,
            EscrowRefund.escrow_released_at >= released.from_,
            EscrowRefund.escrow_released_at < released.to,
        )
        .order_by(EscrowRefund.refund_id)
    )
    return [refund for refund in pending if refund.refund_id not in netted]


async def post_receivable(
    session: AsyncSession, refund: EscrowRefund, settlement_id: uuid.UUID
) -> None:
    """The factory owes back a refund of money `settlement_id` paid it for."""
    refund.status = EscrowRefundStatus.RECEIVABLE.value
    refund.settlement_id = settlement_id
    await post_entry(
        session,
        LedgerEntryKind.FACTORY_RECEIVABLE,
        f"receivable:{refund.refund_id}",
        transfer(factory_receivable(refund.factory_id), ESCROW_RELEASED, refund.amount),
        settlement_id=settlement_id,
    )
    log.info(
        "factory_receivable",
        refund_id=str(refund.refund_id),
        factory_id=str(refund.factory_id),
        amount=refund.amount,
        settlement_id=str(settlement_id),
    )


async def record_escrow_refunds(
    session: AsyncSession, reports: Sequence[EscrowRefundIn]
) -> EscrowRefundsOut:
    """Account for refunds of released escrow (see the module's docstring), once each: a
    refund reported again is answered as it was recorded. Then commit."""
    for factory_id in sorted({report.factory_id for report in reports}):
        await lock_factory(session, factory_id)  # in one order: no deadlock
    recorded: dict[uuid.UUID, EscrowRefund] = {
        refund.refund_id: refund
        for refund in await session.scalars(
            select(EscrowRefund).where(
                EscrowRefund.refund_id.in_([report.refund_id for report in reports])
            )
        )
    }
    for report in reports:
        if report.refund_id in recorded:
            continue
        refund = EscrowRefund(
            refund_id=report.refund_id,
            factory_id=report.factory_id,
            payment_id=report.payment_id,
            amount=report.amount,
            escrow_released_at=report.escrow_released_at,
            status=EscrowRefundStatus.PENDING.value,
        )
        session.add(refund)
        recorded[report.refund_id] = refund
        settled_by = await session.scalar(
            select(FactorySettlement.id).where(
                FactorySettlement.factory_id == report.factory_id,
                FactorySettlement.period_start <= report.escrow_released_at,
                FactorySettlement.period_end > report.escrow_released_at,
            )
        )
        await session.flush()
        if settled_by is not None:
            await post_receivable(session, refund, settled_by)
    await session.commit()
    return EscrowRefundsOut(
        refunds=[
            EscrowRefundOut(
                refund_id=refund.refund_id,
                factory_id=refund.factory_id,
                amount=refund.amount,
                status=EscrowRefundStatus(refund.status),
                settlement_id=refund.settlement_id,
            )
            for refund in (recorded[report.refund_id] for report in reports)
        ]
    )
