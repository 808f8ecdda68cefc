"""Settling factories (seed step 10, design 9): what escrow released to a factory in a period,
less the platform's fee, booked in the double-entry ledger and paid out through Xendit.

A settlement, its ledger entry and its payout request are one transaction. The database
refuses an entry whose debits and credits differ when the transaction commits (a deferred
constraint trigger, see the migration), so no code path can leave the ledger unbalanced.
Accounts:

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
they have already taken off. Under one lock per factory (`_lock_factory`), a refund is then
accounted for exactly once, whichever arrives first:

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
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog
from sqlalchemy import Select, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from laku.core.errors import Conflict, InvalidInput, NotFound
from laku.core.money import apply_rate, format_rupiah
from laku.core.outbox import enqueue
from laku.core.security import Principal, Role
from laku.factory.client import FactoryClient
from laku.payment.client import EscrowReleasedOut, PaymentClient
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
from laku.settlement.schemas import (
    AccountBalanceOut,
    EscrowRefundIn,
    EscrowRefundOut,
    EscrowRefundsOut,
    EscrowRefundStatus,
    FailedPayoutOut,
    LedgerBalancesOut,
    LedgerEntryKind,
    LedgerEntryOut,
    LedgerLineOut,
    PayoutAccountIn,
    SettlementCreate,
    SettlementDetailOut,
    SettlementOut,
    SettlementPreviewOut,
    SettlementSessionOut,
    SettlementStatus,
)

log = structlog.get_logger()

ESCROW_RELEASED = "escrow_released"
PLATFORM_FEE_REVENUE = "platform_fee_revenue"
CASH_XENDIT = "cash_xendit"
# The outbox kind that requests a settlement's payout and follows it until it settles.
PAY_OUT = "pay_out_settlement"


def factory_payable(factory_id: uuid.UUID) -> str:
    return f"factory_payable:{factory_id}"


def factory_receivable(factory_id: uuid.UUID) -> str:
    return f"factory_receivable:{factory_id}"


class UnknownFactory(InvalidInput):
    code, title = "unknown_factory", "No such factory"


class PeriodNotEnded(InvalidInput):
    code, title = "period_not_ended", "A period is settled once it has ended"


class NoPayoutAccount(Conflict):
    code, title = "no_payout_account", "The factory has no payout account"


class SettlementPeriodOverlaps(Conflict):
    code, title = "settlement_period_overlaps", "The factory was settled for part of this period"


class NothingToSettle(Conflict):
    code, title = "nothing_to_settle", "No escrow was released to the factory in this period"


class SettlementMismatch(Conflict):
    code, title = "settlement_mismatch", "The amounts differ from the server's"


class PayoutNotFailed(Conflict):
    code, title = "payout_not_failed", "Only a settlement whose payout failed is paid out again"


def _not_found() -> NotFound:
    return NotFound("No such settlement", code="settlement_not_found")


def sees_factory(principal: Principal, factory_id: uuid.UUID) -> bool:
    """Admins and services see every factory's settlements; a factory account its own."""
    return principal.is_privileged or (
        principal.role is Role.FACTORY
        and principal.factory_id is not None
        and principal.factory_id == factory_id
    )


# Figures ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Figures:
    total_amount: int
    platform_fee: int
    receivable_deducted: int
    receivable_carried: int
    net_amount: int
    fee_bps: int


def figures(total_amount: int, fee_bps: int, receivable: int = 0) -> Figures:
    """The fee rounded half up to the rupiah (5,000,000 at 500 bps: 250,000, net 4,750,000),
    then as much of what the factory owes back (`receivable`) as the rest covers."""
    fee = apply_rate(total_amount, fee_bps)
    deducted = min(receivable, total_amount - fee)
    return Figures(
        total_amount,
        fee,
        deducted,
        receivable - deducted,
        total_amount - fee - deducted,
        fee_bps,
    )


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


async def _receivable_balance(session: AsyncSession, factory_id: uuid.UUID) -> int:
    """What the factory owes back, by the ledger."""
    balance = await session.scalar(
        select(func.coalesce(func.sum(LedgerLine.debit - LedgerLine.credit), 0)).where(
            LedgerLine.account == factory_receivable(factory_id)
        )
    )
    return int(balance or 0)


async def _pending_missed(
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


async def preview(
    session: AsyncSession, released: EscrowReleasedOut, fee_bps: int
) -> SettlementPreviewOut:
    missed = await _pending_missed(session, released)
    owed = await _receivable_balance(session, released.factory_id) + sum(r.amount for r in missed)
    computed = figures(released.total_amount, fee_bps, owed)
    return SettlementPreviewOut(
        factory_id=released.factory_id,
        period_start=released.from_,
        period_end=released.to,
        total_amount=computed.total_amount,
        platform_fee=computed.platform_fee,
        receivable_deducted=computed.receivable_deducted,
        receivable_carried=computed.receivable_carried,
        net_amount=computed.net_amount,
        fee_bps=fee_bps,
        payments=released.payments,
        sessions=[SettlementSessionOut.model_validate(s) for s in released.sessions],
    )


# The ledger ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    account: str
    debit: int = 0
    credit: int = 0


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


# Settling --------------------------------------------------------------------------------------


async def _lock_factory(session: AsyncSession, factory_id: uuid.UUID) -> None:
    """Serialise a factory's settlements and the refunds reported against them until the
    transaction ends. An advisory lock: a refund may be reported for a factory that has no
    payout account (no row to lock) yet."""
    await session.execute(
        select(
            func.pg_advisory_xact_lock(func.hashtextextended(f"settlement.factory:{factory_id}", 0))
        )
    )


async def _post_receivable(
    session: AsyncSession, refund: EscrowRefund, settlement_id: uuid.UUID
) -> None:
    """The factory owes back a refund of money `settlement_id` paid it for."""
    refund.status = EscrowRefundStatus.RECEIVABLE.value
    refund.settlement_id = settlement_id
    await post_entry(
        session,
        LedgerEntryKind.FACTORY_RECEIVABLE,
        f"receivable:{refund.refund_id}",
        [
            Line(factory_receivable(refund.factory_id), debit=refund.amount),
            Line(ESCROW_RELEASED, credit=refund.amount),
        ],
        settlement_id=settlement_id,
    )
    log.info(
        "factory_receivable",
        refund_id=str(refund.refund_id),
        factory_id=str(refund.factory_id),
        amount=refund.amount,
        settlement_id=str(settlement_id),
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
    await _lock_factory(session, factory_id)
    account = await session.scalar(
        select(FactoryPayoutAccount)
        .where(FactoryPayoutAccount.factory_id == factory_id)
        .with_for_update()
    )
    if account is None:
        raise NoPayoutAccount(f"Set factory {factory_id}'s payout account first")
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
    missed = await _pending_missed(session, released)
    owed = await _receivable_balance(session, factory_id) + sum(r.amount for r in missed)
    computed = figures(released.total_amount, fee_bps, owed)
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
        total_amount=computed.total_amount,
        platform_fee=computed.platform_fee,
        receivable_deducted=computed.receivable_deducted,
        receivable_carried=computed.receivable_carried,
        net_amount=computed.net_amount,
        fee_bps=fee_bps,
        status=SettlementStatus.PENDING.value,
        bank_code=account.bank_code,
        account_number=account.account_number,
        account_holder_name=account.account_holder_name,
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
        await _post_receivable(session, refund, settlement.id)
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


async def record_escrow_refunds(
    session: AsyncSession, reports: Sequence[EscrowRefundIn]
) -> EscrowRefundsOut:
    """Account for refunds of released escrow (see the module's docstring), once each: a
    refund reported again is answered as it was recorded. Then commit."""
    for factory_id in sorted({report.factory_id for report in reports}):
        await _lock_factory(session, factory_id)  # in one order: no deadlock
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
            await _post_receivable(session, refund, settled_by)
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


async def _locked_pending(
    session: AsyncSession, settlement_id: uuid.UUID, attempt: int
) -> FactorySettlement | None:
    """The settlement under its row lock while payout `attempt` is outstanding, else None."""
    settlement = await session.scalar(
        select(FactorySettlement)
        .where(FactorySettlement.id == settlement_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if (
        settlement is None
        or settlement.status != SettlementStatus.PENDING
        or settlement.payout_attempt != attempt
    ):
        return None
    return settlement


async def record_payout(
    session: AsyncSession, settlement_id: uuid.UUID, attempt: int, payout_id: str
) -> None:
    await session.execute(
        update(FactorySettlement)
        .where(
            FactorySettlement.id == settlement_id,
            FactorySettlement.payout_attempt == attempt,
            FactorySettlement.payout_id.is_(None),
        )
        .values(payout_id=payout_id)
    )
    await session.commit()


async def payout_succeeded(session: AsyncSession, settlement_id: uuid.UUID, attempt: int) -> None:
    """The factory has its money: `paid`, and the payable is paid from cash. Once, however
    often it is reported."""
    settlement = await _locked_pending(session, settlement_id, attempt)
    if settlement is not None:
        settlement.status = SettlementStatus.PAID.value
        settlement.paid_at = datetime.now(UTC)
        await post_entry(
            session,
            LedgerEntryKind.SETTLEMENT_PAYOUT,
            f"settlement:{settlement.id}:payout",
            [
                Line(factory_payable(settlement.factory_id), debit=settlement.net_amount),
                Line(CASH_XENDIT, credit=settlement.net_amount),
            ],
            settlement_id=settlement.id,
        )
        log.info("settlement_paid", settlement_id=str(settlement_id), attempt=attempt)
    await session.commit()


async def payout_failed(
    session: AsyncSession, settlement_id: uuid.UUID, attempt: int, failure_code: str
) -> None:
    """The payout will not arrive: `payout_failed`, the payable stays in the ledger, and the
    attempt is kept for when the payout is retried."""
    settlement = await _locked_pending(session, settlement_id, attempt)
    if settlement is not None:
        settlement.status = SettlementStatus.PAYOUT_FAILED.value
        settlement.payout_failure_code = failure_code
        session.add(
            FailedPayout(
                settlement_id=settlement.id,
                attempt=attempt,
                payout_id=settlement.payout_id,
                failure_code=failure_code,
                bank_code=settlement.bank_code,
                account_number=settlement.account_number,
                account_holder_name=settlement.account_holder_name,
            )
        )
        log.warning(
            "settlement_payout_failed",
            settlement_id=str(settlement_id),
            attempt=attempt,
            failure_code=failure_code,
        )
    await session.commit()


async def retry_payout(session: AsyncSession, settlement_id: uuid.UUID) -> FactorySettlement:
    """Pay a settlement whose payout failed again, to the factory's payout account as it is
    now (an admin may have corrected it): `pending`, and a new payout requested with the next
    attempt's reference and key. The failed payout is kept and never requested again."""
    settlement = await session.scalar(
        select(FactorySettlement).where(FactorySettlement.id == settlement_id).with_for_update()
    )
    if settlement is None:
        raise _not_found()
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


# Reading ---------------------------------------------------------------------------------------


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
    total = await session.scalar(select(func.count()).select_from(query.subquery()))
    items = await session.scalars(
        query.order_by(FactorySettlement.period_start.desc(), FactorySettlement.id)
        .limit(limit)
        .offset(offset)
    )
    return items.all(), total or 0


# Payout accounts -------------------------------------------------------------------------------


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
    account = await session.get(FactoryPayoutAccount, factory_id)
    if account is None:
        raise NotFound(f"Factory {factory_id} has no payout account", code="no_payout_account")
    return account
