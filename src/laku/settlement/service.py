"""Settling factories (seed step 10, design 9): what escrow released to a factory in a period,
less the platform's fee, booked in the double-entry ledger and paid out through Xendit.

A settlement, its ledger entry and its payout request are one transaction. The database
refuses an entry whose debits and credits differ when the transaction commits (a deferred
constraint trigger, see the migration), so no code path can leave the ledger unbalanced.
Accounts:

- `escrow_released`: buyers' money the platform released from escrow to a factory's side.
- `factory_payable:<factoryId>`: what the platform owes the factory until its payout succeeds.
- `platform_fee_revenue`: the platform's fee.
- `cash_xendit`: money paid out of the platform's Xendit balance.
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
    FactoryPayoutAccount,
    FactorySettlement,
    LedgerEntry,
    LedgerLine,
    SettlementSession,
    outbox,
)
from laku.settlement.schemas import (
    AccountBalanceOut,
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


def _not_found() -> NotFound:
    return NotFound("No such settlement", code="settlement_not_found")


def sees_factory(principal: Principal, factory_id: uuid.UUID) -> bool:
    """Admins and services see every factory's settlements; a factory account its own."""
    return principal.is_privileged or (
        principal.role is Role.FACTORY and principal.factory_id == factory_id
    )


# Figures ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Figures:
    total_amount: int
    platform_fee: int
    net_amount: int
    fee_bps: int


def figures(total_amount: int, fee_bps: int) -> Figures:
    """The fee rounded half up to the rupiah (5,000,000 at 500 bps: 250,000, net 4,750,000)."""
    fee = apply_rate(total_amount, fee_bps)
    return Figures(total_amount, fee, total_amount - fee, fee_bps)


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


def preview(released: EscrowReleasedOut, fee_bps: int) -> SettlementPreviewOut:
    computed = figures(released.total_amount, fee_bps)
    return SettlementPreviewOut(
        factory_id=released.factory_id,
        period_start=released.from_,
        period_end=released.to,
        total_amount=computed.total_amount,
        platform_fee=computed.platform_fee,
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


async def create_settlement(
    session: AsyncSession, request: SettlementCreate, released: EscrowReleasedOut, fee_bps: int
) -> FactorySettlement:
    """Record the settlement of what `released` (payment-service's figures for the request's
    factory and period) says, its ledger entry and its payout request, then commit. Under
    the factory's payout account's row lock, so two settlements of one factory are made one
    after the other and the overlap check holds."""
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
    computed = figures(released.total_amount, fee_bps)
    if computed.total_amount == 0:
        raise NothingToSettle(f"Nothing was released to factory {factory_id} in the period")
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
        net_amount=computed.net_amount,
        fee_bps=fee_bps,
        status=SettlementStatus.PENDING.value,
        bank_code=account.bank_code,
        account_number=account.account_number,
        account_holder_name=account.account_holder_name,
    )
    if computed.net_amount == 0:  # the fee took it all: nothing to pay out
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
    await post_entry(
        session,
        LedgerEntryKind.SETTLEMENT,
        f"settlement:{settlement.id}",
        [
            Line(ESCROW_RELEASED, debit=computed.total_amount),
            Line(factory_payable(factory_id), credit=computed.net_amount),
            Line(PLATFORM_FEE_REVENUE, credit=computed.platform_fee),
        ],
        settlement_id=settlement.id,
    )
    if computed.net_amount > 0:
        await enqueue(session, outbox, PAY_OUT, {"settlementId": str(settlement.id)})
    await session.commit()
    log.info(
        "factory_settled",
        settlement_id=str(settlement.id),
        factory_id=str(factory_id),
        total=computed.total_amount,
        fee=computed.platform_fee,
        net=computed.net_amount,
    )
    return settlement


async def _locked_pending(
    session: AsyncSession, settlement_id: uuid.UUID
) -> FactorySettlement | None:
    """The settlement under its row lock while its payout is outstanding, else None."""
    settlement = await session.scalar(
        select(FactorySettlement)
        .where(FactorySettlement.id == settlement_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if settlement is None or settlement.status != SettlementStatus.PENDING:
        return None
    return settlement


async def record_payout(session: AsyncSession, settlement_id: uuid.UUID, payout_id: str) -> None:
    await session.execute(
        update(FactorySettlement)
        .where(FactorySettlement.id == settlement_id, FactorySettlement.payout_id.is_(None))
        .values(payout_id=payout_id)
    )
    await session.commit()


async def payout_succeeded(session: AsyncSession, settlement_id: uuid.UUID) -> None:
    """The factory has its money: `paid`, and the payable is paid from cash. Once, however
    often it is reported."""
    settlement = await _locked_pending(session, settlement_id)
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
        log.info("settlement_paid", settlement_id=str(settlement_id))
    await session.commit()


async def payout_failed(session: AsyncSession, settlement_id: uuid.UUID, failure_code: str) -> None:
    """The payout will not arrive: `payout_failed`, and the payable stays in the ledger."""
    settlement = await _locked_pending(session, settlement_id)
    if settlement is not None:
        settlement.status = SettlementStatus.PAYOUT_FAILED.value
        settlement.payout_failure_code = failure_code
        log.warning(
            "settlement_payout_failed", settlement_id=str(settlement_id), failure_code=failure_code
        )
    await session.commit()


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
    return SettlementDetailOut(
        **SettlementOut.model_validate(settlement).model_dump(),
        sessions=[SettlementSessionOut.model_validate(s) for s in sessions],
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
