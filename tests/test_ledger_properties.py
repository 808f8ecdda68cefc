"""The settlement ledger under random flows, driven through settlement-service's own functions on
a real, migrated database: settlements of random totals at random fee rates for a few
factories, refused ones (overlapping periods, amounts that are not the server's, nothing to
settle), payouts that succeed or fail in any order and are reported again, failed payouts
retried, and refunds of released escrow reported (again) for settled periods and for periods
not settled yet, whose settlement's figures took them off or missed them. After every step
every entry balances, each factory's payable equals the nets of its settlements not yet paid,
its receivable what it owes back and no more than what later settlements could not cover,
and each settlement has exactly the entries it should. An entry that does not balance is
refused by the database at commit, however it is written.

The database is a fresh one with only the settlement schema, so no running settlement-service
relays these settlements' payouts meanwhile.
"""

import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from laku.core.db import Database, async_url
from laku.payment.client import CancelledOrderRefundOut, EscrowReleasedOut, ReleasedSessionOut
from laku.settlement import ledger, payouts, receivables, rules, settlements
from laku.settlement.models import FactorySettlement, LedgerEntry
from laku.settlement.rules import EscrowRefundStatus, LedgerEntryKind
from laku.settlement.schemas import EscrowRefundIn, PayoutAccountIn, SettlementCreate
from laku.testing.database import plain_url, throwaway_database

FACTORIES = 3
# Far in the past, so every period has ended; each factory's periods follow one another.
EPOCH = datetime(2020, 1, 1, tzinfo=UTC)
ACCOUNTS = ("escrow_released", "platform_fee_revenue", "cash_xendit", "suspense")


@pytest.fixture(scope="module")
def ledger_database(database_url: str) -> Iterator[str]:
    """A database of its own beside the test session's, with the settlement schema only."""
    with throwaway_database(database_url, ["settlement"]) as url:
        yield url


def expected_fee(total: int, fee_bps: int) -> int:
    """Rounded half up to the rupiah, by decimal arithmetic rather than the service's own."""
    exact = Decimal(total) * Decimal(fee_bps) / Decimal(10_000)
    return int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP))


@dataclass
class Settled:
    """The model of one settlement."""

    factory: int
    start: datetime
    end: datetime
    net: int
    status: str
    attempt: int = 1
    receivables: int = 0  # refunds of money it paid the factory, or it missed

    @property
    def entries(self) -> int:
        """The settlement's own entry, its payout's once paid through one, and a receivable's
        per refund of escrow it had paid the factory for."""
        return (2 if self.status == "paid" and self.net > 0 else 1) + self.receivables


@dataclass
class Reported:
    """A refund of released escrow reported while its period was not settled."""

    refund: EscrowRefundIn
    seen: bool  # the settlement's figures (read after it) list it, and took it off


class LedgerMachine(RuleBasedStateMachine):
    settlements = Bundle("settlements")

    def __init__(self, runner: asyncio.Runner, db: Database) -> None:
        super().__init__()
        self.runner = runner
        self.db = db
        self.factories = [uuid.uuid4() for _ in range(FACTORIES)]
        self.next_start = [EPOCH] * FACTORIES
        self.model: dict[uuid.UUID, Settled] = {}
        self.owed = [0] * FACTORIES  # what each factory owes back
        self.pending: list[Reported] = []

    def run(self, coro: Any) -> Any:
        return self.runner.run(coro)

    @initialize()
    def payout_accounts(self) -> None:
        async def create() -> None:
            for factory_id in self.factories:
                async with self.db.sessions() as session:
                    await settlements.set_payout_account(
                        session,
                        factory_id,
                        PayoutAccountIn(
                            bank_code="BNI", account_number="1234567890", account_holder_name="PT"
                        ),
                    )

        self.run(create())

    # Steps -----------------------------------------------------------------------------------

    def _released(
        self, factory: int, start: datetime, end: datetime, parts: list[int]
    ) -> EscrowReleasedOut:
        return EscrowReleasedOut(
            factory_id=self.factories[factory],
            from_=start,
            to=end,
            total_amount=sum(parts),
            payments=len(parts),
            sessions=[
                ReleasedSessionOut(group_session_id=uuid.uuid4(), amount=amount, payments=1)
                for amount in parts
            ],
            cancelled_order_refunds=[
                CancelledOrderRefundOut(
                    refund_id=r.refund.refund_id,
                    payment_id=r.refund.payment_id,
                    amount=r.refund.amount,
                    escrow_released_at=r.refund.escrow_released_at,
                )
                for r in self._pending_in(factory, start, end)
                if r.seen
            ],
        )

    def _pending_in(self, factory: int, start: datetime, end: datetime) -> list[Reported]:
        return [
            r
            for r in self.pending
            if r.refund.factory_id == self.factories[factory]
            and start <= r.refund.escrow_released_at < end
        ]

    def _deduction(self, factory: int, start: datetime, end: datetime, net: int) -> int:
        """What settling [start, end) nets out of `net` (total less fee): what the factory
        owes, with the pending refunds the figures missed."""
        missed = sum(r.refund.amount for r in self._pending_in(factory, start, end) if not r.seen)
        return min(self.owed[factory] + missed, net)

    def _create(
        self, factory: int, start: datetime, end: datetime, parts: list[int], fee_bps: int, **sent
    ) -> FactorySettlement:
        request = SettlementCreate(
            factory_id=self.factories[factory], period_start=start, period_end=end, **sent
        )

        async def create() -> FactorySettlement:
            async with self.db.sessions() as session:
                return await settlements.create_settlement(
                    session, request, self._released(factory, start, end, parts), fee_bps
                )

        return self.run(create())

    @rule(
        target=settlements,
        factory=st.integers(0, FACTORIES - 1),
        parts=st.lists(st.integers(0, 10**12), min_size=1, max_size=3),
        fee_bps=st.one_of(st.sampled_from([0, 500, 10_000]), st.integers(0, 10_000)),
        days=st.integers(1, 31),
        gap_days=st.integers(0, 3),
    )
    def settle(self, factory: int, parts: list[int], fee_bps: int, days: int, gap_days: int) -> Any:
        start = self.next_start[factory] + timedelta(days=gap_days)
        end = start + timedelta(days=days)
        total = sum(parts)
        if total == 0:
            with pytest.raises(settlements.NothingToSettle):
                self._create(factory, start, end, parts, fee_bps)
            return multiple()
        fee = expected_fee(total, fee_bps)
        deducted = self._deduction(factory, start, end, total - fee)
        settlement = self._create(
            factory,
            start,
            end,
            parts,
            fee_bps,
            total_amount=total,
            platform_fee=fee,
            net_amount=total - fee - deducted,
        )
        assert (settlement.total_amount, settlement.platform_fee) == (total, fee)
        assert settlement.receivable_deducted == deducted
        assert settlement.net_amount == total - fee - deducted >= 0
        missed = [r for r in self._pending_in(factory, start, end) if not r.seen]
        self.owed[factory] += sum(r.refund.amount for r in missed) - deducted
        assert settlement.receivable_carried == self.owed[factory]
        self.pending = [r for r in self.pending if r not in self._pending_in(factory, start, end)]
        self.next_start[factory] = end
        # The fee (and what the factory owes) may take everything: then there is nothing to
        # pay out, and it is paid.
        status = "paid" if settlement.net_amount == 0 else "pending"
        assert settlement.status == status
        self.model[settlement.id] = Settled(
            factory, start, end, settlement.net_amount, status, receivables=len(missed)
        )
        return settlement.id

    def _report(self, refund: EscrowRefundIn) -> Any:
        async def report() -> Any:
            async with self.db.sessions() as session:
                [recorded] = (await receivables.record_escrow_refunds(session, [refund])).refunds
                return recorded

        return self.run(report())

    @rule(
        settlement_id=settlements,
        amount=st.integers(1, 10**12),
        seconds=st.integers(0, 10**9),
    )
    def refund_after_settlement(self, settlement_id: uuid.UUID, amount: int, seconds: int) -> None:
        """An order released in a settled period is cancelled: the factory owes it back, once
        however often it is reported."""
        settled = self.model[settlement_id]
        period = int((settled.end - settled.start).total_seconds())
        released_at = settled.start + timedelta(seconds=seconds % period)
        refund = EscrowRefundIn(
            refund_id=uuid.uuid4(),
            payment_id=uuid.uuid4(),
            factory_id=self.factories[settled.factory],
            amount=amount,
            escrow_released_at=released_at,
        )
        for _ in range(2):
            recorded = self._report(refund)
            assert (recorded.status, recorded.settlement_id) == (
                EscrowRefundStatus.RECEIVABLE,
                settlement_id,
            )
        self.owed[settled.factory] += amount
        settled.receivables += 1

    @rule(
        factory=st.integers(0, FACTORIES - 1),
        amount=st.integers(1, 10**12),
        hours=st.integers(0, 24 * 3),
        seen=st.booleans(),
    )
    def refund_before_settlement(self, factory: int, amount: int, hours: int, seen: bool) -> None:
        """Reported while its period is not settled: that settlement's figures took it off
        (`seen`) or were read before it was made."""
        refund = EscrowRefundIn(
            refund_id=uuid.uuid4(),
            payment_id=uuid.uuid4(),
            factory_id=self.factories[factory],
            amount=amount,
            escrow_released_at=self.next_start[factory] + timedelta(hours=hours),
        )
        recorded = self._report(refund)
        assert (recorded.status, recorded.settlement_id) == (EscrowRefundStatus.PENDING, None)
        self.pending.append(Reported(refund, seen))

    @rule(
        settlement_id=settlements,
        start_hours=st.integers(-48, 24 * 31),
        length_hours=st.integers(1, 24 * 40),
    )
    def overlap(self, settlement_id: uuid.UUID, start_hours: int, length_hours: int) -> None:
        settled = self.model[settlement_id]
        start = settled.start + timedelta(hours=start_hours)
        if start >= settled.end:
            start = settled.end - timedelta(hours=1)
        end = max(start, settled.start) + timedelta(hours=length_hours)
        with pytest.raises(settlements.SettlementPeriodOverlaps):
            self._create(settled.factory, start, end, [1_000_000], 500)

    @rule(
        factory=st.integers(0, FACTORIES - 1),
        total=st.integers(1, 10**12),
        off_by=st.integers(-1_000, 1_000).filter(bool),
        field=st.sampled_from(["total_amount", "platform_fee", "net_amount"]),
    )
    def mismatch(self, factory: int, total: int, off_by: int, field: str) -> None:
        fee = expected_fee(total, 500)
        start = self.next_start[factory]
        net = total - fee - self._deduction(factory, start, start + timedelta(days=1), total - fee)
        right = {"total_amount": total, "platform_fee": fee, "net_amount": net}
        sent = {**right, field: max(0, right[field] + off_by)}
        if sent == right:
            return
        with pytest.raises(settlements.SettlementMismatch):
            self._create(factory, start, start + timedelta(days=1), [total], 500, **sent)

    @rule(settlement_id=settlements, succeeded=st.booleans(), stale=st.booleans())
    def payout_outcome(self, settlement_id: uuid.UUID, succeeded: bool, stale: bool) -> None:
        """Xendit's answer, possibly again or contradicting an earlier one, or about an earlier
        attempt's payout: only the first answer about the pending attempt counts."""
        settled = self.model[settlement_id]
        attempt = settled.attempt - 1 if stale else settled.attempt

        async def report() -> None:
            async with self.db.sessions() as session:
                if succeeded:
                    await payouts.payout_succeeded(session, settlement_id, attempt)
                else:
                    await payouts.payout_failed(
                        session, settlement_id, attempt, "INVALID_DESTINATION"
                    )

        self.run(report())
        if settled.status == "pending" and not stale:
            settled.status = "paid" if succeeded else "payout_failed"

    @rule(settlement_id=settlements)
    def retry_payout(self, settlement_id: uuid.UUID) -> None:
        """An admin pays a failed payout again: a new attempt; anything else is refused."""
        settled = self.model[settlement_id]

        async def retry() -> FactorySettlement:
            async with self.db.sessions() as session:
                return await settlements.retry_payout(session, settlement_id)

        if settled.status != "payout_failed":
            with pytest.raises(settlements.PayoutNotFailed):
                self.run(retry())
            return
        retried = self.run(retry())
        settled.status = "pending"
        settled.attempt += 1
        assert (retried.status, retried.payout_attempt) == ("pending", settled.attempt)

    @rule(
        lines=st.lists(
            st.tuples(
                st.sampled_from(ACCOUNTS), st.booleans(), st.integers(1, 10**12)
            ),  # (account, is a debit, amount)
            max_size=4,
        ).filter(
            lambda lines: (
                sum(a for _, debit, a in lines if debit)
                != sum(a for _, debit, a in lines if not debit)
                or not lines
            )
        )
    )
    def unbalanced_entry(self, lines: list[tuple[str, bool, int]]) -> None:
        """Written through the service's own function, refused when the transaction commits."""

        async def post() -> None:
            async with self.db.sessions() as session:
                await ledger.post_entry(
                    session,
                    LedgerEntryKind.SETTLEMENT,
                    f"unbalanced:{uuid.uuid4()}",
                    [
                        ledger.Line(
                            account, debit=amount if debit else 0, credit=0 if debit else amount
                        )
                        for account, debit, amount in lines
                    ],
                )
                await session.flush()  # written: the check waits for the commit
                with pytest.raises(IntegrityError, match="unbalanced"):
                    await session.commit()

        self.run(post())

    # Invariants -----------------------------------------------------------------------------

    @invariant()
    def every_entry_balances(self) -> None:
        async def unbalanced() -> list[Any]:
            async with self.db.engine.connect() as conn:
                rows = await conn.exec_driver_sql(
                    "SELECT e.id FROM settlement.transaction_ledger e "
                    "LEFT JOIN settlement.transaction_ledger_lines l ON l.entry_id = e.id "
                    "GROUP BY e.id HAVING count(l.id) < 2 "
                    "OR coalesce(sum(l.debit), 0) <> coalesce(sum(l.credit), 0)"
                )
                return list(rows)

        assert self.run(unbalanced()) == []

    @invariant()
    def payables_are_the_unpaid_nets_and_settlements_as_modelled(self) -> None:
        async def read() -> tuple[Any, dict[uuid.UUID, tuple[str, int]]]:
            async with self.db.sessions() as session:
                balances = await ledger.balances(session)
                rows = (
                    await session.execute(
                        select(
                            FactorySettlement.id,
                            FactorySettlement.status,
                            func.count(LedgerEntry.id),
                        )
                        .outerjoin(LedgerEntry, LedgerEntry.settlement_id == FactorySettlement.id)
                        .where(FactorySettlement.factory_id.in_(self.factories))
                        .group_by(FactorySettlement.id)
                    )
                ).all()
            return balances, {row[0]: (row[1], row[2]) for row in rows}

        balances, stored = self.run(read())
        assert balances.total_debit == balances.total_credit
        accounts = {a.account: a for a in balances.accounts}
        for index, factory_id in enumerate(self.factories):
            account = accounts.get(rules.factory_payable(factory_id))
            owed = account.credit - account.debit if account else 0
            unpaid = sum(
                s.net for s in self.model.values() if s.factory == index and s.status != "paid"
            )
            assert owed == unpaid
            receivable = accounts.get(rules.factory_receivable(factory_id))
            owed_back = receivable.debit - receivable.credit if receivable else 0
            assert owed_back == self.owed[index]
        assert stored == {sid: (s.status, s.entries) for sid, s in self.model.items()}


def test_the_ledger_balances_under_random_settlement_flows(ledger_database: str) -> None:
    with asyncio.Runner() as runner:
        db = Database(async_url(ledger_database), pool_size=2, max_overflow=0)
        try:
            run_state_machine_as_test(
                lambda: LedgerMachine(runner, db),
                settings=settings(
                    max_examples=40,
                    stateful_step_count=20,
                    deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
                ),
            )
        finally:
            runner.run(db.dispose())


async def test_the_database_refuses_unbalanced_or_changed_entries(ledger_database: str) -> None:
    """Written in plain SQL, past every line of the service's code."""
    conn = await asyncpg.connect(plain_url(ledger_database))
    try:
        entry = uuid.uuid4()

        async def write(*lines: tuple[str, int, int]) -> None:
            async with conn.transaction():
                await conn.execute(
                    "INSERT INTO settlement.transaction_ledger (id, kind, reference) "
                    "VALUES ($1, 'settlement', $2)",
                    entry,
                    f"sql:{entry}",
                )
                for account, debit, credit in lines:
                    await conn.execute(
                        "INSERT INTO settlement.transaction_ledger_lines "
                        "(entry_id, account, debit, credit) VALUES ($1, $2, $3, $4)",
                        entry,
                        account,
                        debit,
                        credit,
                    )

        for lines in (
            [("escrow_released", 100, 0), ("platform_fee_revenue", 0, 99)],
            [("escrow_released", 100, 0)],
            [],
        ):
            with pytest.raises(asyncpg.CheckViolationError, match="unbalanced"):
                await write(*lines)
        # A line is a debit or a credit, of a positive amount.
        for line in (("a", 0, 0), ("a", 5, 5), ("a", -5, 0)):
            with pytest.raises(asyncpg.CheckViolationError):
                await write(line, ("b", 0, 5))
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM settlement.transaction_ledger WHERE id = $1", entry
            )
            == 0
        )

        await write(("escrow_released", 100, 0), ("platform_fee_revenue", 0, 100))
        # What was booked stays as it was.
        for statement in (
            "UPDATE settlement.transaction_ledger_lines SET credit = 101 WHERE entry_id = $1 "
            "AND credit > 0",
            "DELETE FROM settlement.transaction_ledger_lines WHERE entry_id = $1",
            "UPDATE settlement.transaction_ledger SET reference = 'other' WHERE id = $1",
        ):
            with pytest.raises(asyncpg.IntegrityConstraintViolationError, match="append-only"):
                await conn.execute(statement, entry)
        sums = await conn.fetchrow(
            "SELECT sum(debit) AS debit, sum(credit) AS credit "
            "FROM settlement.transaction_ledger_lines WHERE entry_id = $1",
            entry,
        )
        assert (sums["debit"], sums["credit"]) == (100, 100)
    finally:
        await conn.close()
