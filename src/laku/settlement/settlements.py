"""Settling factories (seed step 10, design 9): what escrow released to a factory in a period,
less the platform's fee, booked in the double-entry ledger and paid out through Xendit.

A settlement, its ledger entry and its payout request are one transaction. The ledger
(`ledger.py`) refuses an unbalanced entry at commit. Accounts:

- `escrow_released`: buyers' money the platform released from escrow to a factory's side.
- `factory_payable:<factoryId>`: what the platform owes the factory until its payout succeeds.
- `factory_receivable:<factoryId>`: what the factory owes the platform: money it was settled
  for and that went back to a buyer since (an order cancelled after the escrow was released).
- `platform_fee_revenue`: the platform's fee.
- `cash_xendit`: money paid out of the platform's Xendit balance.

Refunds after a settlement. A settlement's total is payment-service's figure at the moment it
is read: what the period's payments have left after their refunds. An order cancelled later
is refunded from escrow the factory was already paid for, so the factory owes that back.
payment-service reports every refund of released escrow through its outbox, in the
transaction that makes the refund (`POST /api/settlements/escrow-refunds`, idempotent by
refund id), so no refund is lost however long settlement-service is away; and the figures a
settlement is made from list, from the same database snapshot, the cancelled orders' refunds
they have already taken off. Under one lock per factory (`receivables.lock_factory`), a
refund is then accounted for exactly once, whichever arrives first:

- its release's period is settled, and that settlement's figures did not list it: a
  receivable, Dr `factory_receivable` / Cr `escrow_released` (`receivable:<refundId>`);
- the settlement's figures listed it: `netted`, nothing to post;
- its period is not settled yet: `pending`, and the settlement of that period decides (a
  pending refund its figures missed becomes a receivable then).

Each settlement nets the factory's receivable out of its total less the fee (Cr
`factory_receivable`); what that cannot cover is carried to the next one. A payout is never
negative: a settlement whose receivable takes everything pays nothing and is `paid` at once.

A failed payout stays owed on `factory_payable` until an admin retries it
(`retry_payout`): a new payout, with its own reference and idempotency key per attempt, so
the failed one is never paid twice.
"""

import uuid
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime

import structlog
from sqlalchemy import Select, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from laku.core.errors import Conflict, InvalidInput, NotFound
from laku.core.money import format_rupiah
from laku.core.outbox import enqueue
from laku.core.problems import problem
from laku.core.rows import found, page
from laku.core.security import Principal
from laku.factory.client import FactoryClient
from laku.payment.client import EscrowReleasedOut, PaymentClient
from laku.settlement.ledger import Line, post_entry
from laku.settlement.models import (
    EscrowRefund,
    FactoryPayoutAccount,
    FactorySettlement,
    FailedPayout,
    LedgerEntry,
    LedgerLine,
    SettlementSession,
    outbox,
)
from laku.settlement.payouts import bank_account
from laku.settlement.receivables import (
    lock_factory,
    pending_missed,
    post_receivable,
    receivable_balance,
)
from laku.settlement.rules import (
    ESCROW_RELEASED,
    PLATFORM_FEE_REVENUE,
    EscrowRefundStatus,
    Figures,
    LedgerEntryKind,
    SettlementStatus,
    factory_payable,
    factory_receivable,
    figures,
    sees_factory,
)
from laku.settlement.schemas import (
    FailedPayoutOut,
    LedgerEntryOut,
    LedgerLineOut,
    PayoutAccountIn,
    SettlementCreate,
    SettlementDetailOut,
    SettlementOut,
    SettlementPreviewOut,
    SettlementSessionOut,
)
from laku.settlement.tasks import PAY_OUT

log = structlog.get_logger()


UnknownFactory = problem(InvalidInput, "unknown_factory", "No such factory")
PeriodNotEnded = problem(InvalidInput, "period_not_ended", "A period is settled once it has ended")
NoPayoutAccount = problem(Conflict, "no_payout_account", "The factory has no payout account")
SettlementPeriodOverlaps = problem(
    Conflict, "settlement_period_overlaps", "The factory was settled for part of this period"
)
NothingToSettle = problem(
    Conflict, "nothing_to_settle", "No escrow was released to the factory in this period"
)
SettlementMismatch = problem(
    Conflict, "settlement_mismatch", "The amounts differ from the server's"
)
PayoutNotFailed = problem(
    Conflict, "payout_not_failed", "Only a settlement whose payout failed is paid out again"
)


def _not_found() -> NotFound:
    return NotFound("No such settlement", code="settlement_not_found")


async def released_escrow(
    factories: FactoryClient,
    payments: PaymentClient,
    factory_id: uuid.UUID,
    start: datetime,
    end: datetime,
) -> EscrowReleasedOut:
    """payment-service's figures for the factory and period; the factory must exist."""
    if await factories.get_factory(factory_id) is None:
        raise UnknownFactory(f"No factory {factory_id}")
    return await payments.escrow_released(factory_id, start, end)


async def _figures(
    session: AsyncSession, released: EscrowReleasedOut, fee_bps: int
) -> tuple[Figures, Sequence[EscrowRefund]]:
    """The figures of settling `released`, less what the factory owes back: its receivable and
    the pending refunds `released` missed (returned too: settling makes them receivables)."""
    missed = await pending_missed(session, released)
    owed = await receivable_balance(session, released.factory_id) + sum(r.amount for r in missed)
    return figures(released.total_amount, fee_bps, owed), missed


async def preview(
    session: AsyncSession, released: EscrowReleasedOut, fee_bps: int
) -> SettlementPreviewOut:
    computed, _ = await _figures(session, released, fee_bps)
    return SettlementPreviewOut(
        factory_id=released.factory_id,
        period_start=released.from_,
        period_end=released.to,
        **asdict(computed),
        payments=released.payments,
        sessions=[SettlementSessionOut.model_validate(s) for s in released.sessions],
    )


async def create_settlement(
    session: AsyncSession, request: SettlementCreate, released: EscrowReleasedOut, fee_bps: int
) -> FactorySettlement:
    """Record the settlement of what `released` (payment-service's figures for the request's
    factory and period) says, less what the factory owes back, its ledger entries and its
    payout request, then commit. Under the factory's lock, so two settlements of one factory
    are made one after the other and the overlap check holds."""
    if request.period_end > datetime.now(UTC):
        raise PeriodNotEnded(
            "periodEnd is in the future: escrow released later in the period would never be settled"
        )
    assert (released.factory_id, released.from_, released.to) == (
        request.factory_id,
        request.period_start,
        request.period_end,
    )
    factory_id = request.factory_id
    await lock_factory(session, factory_id)
    account = found(
        await session.scalar(
            select(FactoryPayoutAccount)
            .where(FactoryPayoutAccount.factory_id == factory_id)
            .with_for_update()
        ),
        NoPayoutAccount(f"Set factory {factory_id}'s payout account first"),
    )
    overlapping = await session.scalar(
        select(FactorySettlement)
        .where(
            FactorySettlement.factory_id == factory_id,
            FactorySettlement.period_start < request.period_end,
            FactorySettlement.period_end > request.period_start,
        )
        .order_by(FactorySettlement.period_start)
        .limit(1)
    )
    if overlapping is not None:
        raise SettlementPeriodOverlaps(
            f"Settlement {overlapping.id} covers {overlapping.period_start.isoformat()} to "
            f"{overlapping.period_end.isoformat()}"
        )
    if released.total_amount == 0:
        raise NothingToSettle(f"Nothing was released to factory {factory_id} in the period")
    computed, missed = await _figures(session, released, fee_bps)
    sent = {
        "totalAmount": (request.total_amount, computed.total_amount),
        "platformFee": (request.platform_fee, computed.platform_fee),
        "netAmount": (request.net_amount, computed.net_amount),
    }
    if differing := [
        f"{name} {format_rupiah(given)} (the server's: {format_rupiah(own)})"
        for name, (given, own) in sent.items()
        if given is not None and given != own
    ]:
        raise SettlementMismatch("; ".join(differing))

    settlement = FactorySettlement(
        id=uuid.uuid4(),
        factory_id=factory_id,
        period_start=request.period_start,
        period_end=request.period_end,
        **asdict(computed),
        status=SettlementStatus.PENDING.value,
        **bank_account(account),
    )
    if computed.net_amount == 0:  # the fee (and what the factory owed) took it all
        settlement.status = SettlementStatus.PAID.value
        settlement.paid_at = datetime.now(UTC)
    session.add(settlement)
    await session.flush()
    if released.sessions:
        await session.execute(
            insert(SettlementSession),
            [
                {
                    "settlement_id": settlement.id,
                    "group_session_id": s.group_session_id,
                    "amount": s.amount,
                    "payments": s.payments,
                }
                for s in released.sessions
            ],
        )
    if released.cancelled_order_refunds:
        # Taken off the total: never a receivable, whenever their reports arrive.
        netted = insert(EscrowRefund).values(
            [
                {
                    "refund_id": refund.refund_id,
                    "factory_id": factory_id,
                    "payment_id": refund.payment_id,
                    "amount": refund.amount,
                    "escrow_released_at": refund.escrow_released_at,
                    "status": EscrowRefundStatus.NETTED.value,
                    "settlement_id": settlement.id,
                }
                for refund in released.cancelled_order_refunds
            ]
        )
        await session.execute(
            netted.on_conflict_do_update(
                index_elements=[EscrowRefund.refund_id],
                set_={
                    "status": netted.excluded.status,
                    "settlement_id": netted.excluded.settlement_id,
                    "updated_at": func.now(),
                },
                where=EscrowRefund.status == EscrowRefundStatus.PENDING.value,
            )
        )
    for refund in missed:
        await post_receivable(session, refund, settlement.id)
    await post_entry(
        session,
        LedgerEntryKind.SETTLEMENT,
        f"settlement:{settlement.id}",
        [
            Line(ESCROW_RELEASED, debit=computed.total_amount),
            Line(factory_payable(factory_id), credit=computed.net_amount),
            Line(PLATFORM_FEE_REVENUE, credit=computed.platform_fee),
            Line(factory_receivable(factory_id), credit=computed.receivable_deducted),
        ],
        settlement_id=settlement.id,
    )
    if computed.net_amount > 0:
        await enqueue(session, outbox, PAY_OUT, {"settlementId": str(settlement.id), "attempt": 1})
    await session.commit()
    log.info(
        "factory_settled",
        settlement_id=str(settlement.id),
        factory_id=str(factory_id),
        total=computed.total_amount,
        fee=computed.platform_fee,
        receivable_deducted=computed.receivable_deducted,
        receivable_carried=computed.receivable_carried,
        net=computed.net_amount,
    )
    return settlement


async def retry_payout(session: AsyncSession, settlement_id: uuid.UUID) -> FactorySettlement:
    """Pay a settlement whose payout failed again, to the factory's payout account as it is
    now (an admin may have corrected it): `pending`, and a new payout requested with the next
    attempt's reference and key. The failed payout is kept and never requested again."""
    settlement = found(
        await session.scalar(
            select(FactorySettlement).where(FactorySettlement.id == settlement_id).with_for_update()
        ),
        _not_found(),
    )
    if settlement.status != SettlementStatus.PAYOUT_FAILED:
        raise PayoutNotFailed(f"Settlement {settlement_id} is {settlement.status}")
    account = await session.get(FactoryPayoutAccount, settlement.factory_id)
    assert account is not None  # a settlement is made only once its factory has one
    settlement.status = SettlementStatus.PENDING.value
    settlement.payout_attempt += 1
    settlement.payout_id = None
    settlement.payout_failure_code = None
    settlement.bank_code = account.bank_code
    settlement.account_number = account.account_number
    settlement.account_holder_name = account.account_holder_name
    await enqueue(
        session,
        outbox,
        PAY_OUT,
        {"settlementId": str(settlement.id), "attempt": settlement.payout_attempt},
    )
    await session.commit()
    log.info(
        "settlement_payout_retried",
        settlement_id=str(settlement_id),
        attempt=settlement.payout_attempt,
    )
    return settlement


async def get_settlement(
    session: AsyncSession, settlement_id: uuid.UUID, principal: Principal
) -> SettlementDetailOut:
    """With what it covered and its ledger entries. Another factory's settlement does not
    exist for a factory account (a 403 would confirm the id)."""
    settlement = await session.get(FactorySettlement, settlement_id)
    if settlement is None or not sees_factory(principal, settlement.factory_id):
        raise _not_found()
    sessions = await session.scalars(
        select(SettlementSession)
        .where(SettlementSession.settlement_id == settlement_id)
        .order_by(SettlementSession.group_session_id)
    )
    entries = (
        await session.scalars(
            select(LedgerEntry)
            .where(LedgerEntry.settlement_id == settlement_id)
            .order_by(LedgerEntry.created_at, LedgerEntry.reference)
        )
    ).all()
    lines = (
        await session.scalars(
            select(LedgerLine)
            .where(LedgerLine.entry_id.in_([entry.id for entry in entries]))
            .order_by(LedgerLine.id)
        )
    ).all()
    failed_payouts = await session.scalars(
        select(FailedPayout)
        .where(FailedPayout.settlement_id == settlement_id)
        .order_by(FailedPayout.attempt)
    )
    return SettlementDetailOut(
        **SettlementOut.model_validate(settlement).model_dump(),
        sessions=[SettlementSessionOut.model_validate(s) for s in sessions],
        failed_payouts=[FailedPayoutOut.model_validate(f) for f in failed_payouts],
        ledger_entries=[
            LedgerEntryOut(
                id=entry.id,
                kind=LedgerEntryKind(entry.kind),
                reference=entry.reference,
                created_at=entry.created_at,
                lines=[
                    LedgerLineOut.model_validate(line)
                    for line in lines
                    if line.entry_id == entry.id
                ],
            )
            for entry in entries
        ],
    )


async def list_settlements(
    session: AsyncSession,
    *,
    factory_id: uuid.UUID | None,
    status: SettlementStatus | None,
    limit: int,
    offset: int,
) -> tuple[Sequence[FactorySettlement], int]:
    """Newest period first."""
    query: Select[tuple[FactorySettlement]] = select(FactorySettlement)
    if factory_id is not None:
        query = query.where(FactorySettlement.factory_id == factory_id)
    if status is not None:
        query = query.where(FactorySettlement.status == status.value)
    return await page(
        session,
        query,
        FactorySettlement.period_start.desc(),
        FactorySettlement.id,
        limit=limit,
        offset=offset,
    )


async def set_payout_account(
    session: AsyncSession, factory_id: uuid.UUID, account: PayoutAccountIn
) -> FactoryPayoutAccount:
    """Create or replace where the factory's next settlements are paid (one already made is
    paid where its account was)."""
    values = {
        "bank_code": account.bank_code.value,
        "account_number": account.account_number,
        "account_holder_name": account.account_holder_name,
    }
    saved = await session.scalar(
        insert(FactoryPayoutAccount)
        .values(factory_id=factory_id, **values)
        .on_conflict_do_update(
            index_elements=[FactoryPayoutAccount.factory_id],
            set_={**values, "updated_at": func.now()},
        )
        .returning(FactoryPayoutAccount)
    )
    await session.commit()
    assert saved is not None
    return saved


async def get_payout_account(session: AsyncSession, factory_id: uuid.UUID) -> FactoryPayoutAccount:
    return found(
        await session.get(FactoryPayoutAccount, factory_id),
        NotFound(f"Factory {factory_id} has no payout account", code="no_payout_account"),
    )
