"""Paying a settlement out through Xendit and following the payout until it settles (the outbox
relay's handler, through the provider layer's `PayoutFlow`), and what its outcome does to the
settlement and the ledger.

The payout's `reference_id` and `Idempotency-key` are derived from the settlement's id and the
attempt (a failed payout retried by an admin is a new attempt), so a request repeated after a
crash, a lost answer or a Xendit outage makes one payout per attempt, and an outbox row left
over from an earlier attempt does nothing. Xendit reports a payout's
outcome only by webhook, to the one URL the account has (wallet-service's, for withdrawals),
so settlement reads its payout back instead: the outbox row is tried again with back-off (1 s,
2 s ... 5 min) until the payout SUCCEEDED or FAILED. A payout Xendit refuses for what it says
(HTTP 400: an unknown account, an amount out of limits) will never be made, so the
settlement's payout fails at once.
"""

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from laku.core.db import Database
from laku.providers.xendit.payouts import PAYOUT_SUCCEEDED, PayoutFlow, PayoutOrder
from laku.settlement.ledger import post_entry, transfer
from laku.settlement.models import BankAccount, FactorySettlement, FailedPayout
from laku.settlement.rules import (
    CASH_XENDIT,
    LedgerEntryKind,
    SettlementStatus,
    factory_payable,
)

log = structlog.get_logger()


def payout_reference(settlement_id: uuid.UUID, attempt: int = 1) -> str:
    """Not a bare UUID: wallet-service, which receives every payout webhook, takes those for
    its withdrawals' and acknowledges anything else."""
    reference = f"settlement-{settlement_id}"
    return reference if attempt == 1 else f"{reference}-{attempt}"


def bank_account(account: BankAccount) -> dict[str, str]:
    """Where a payout goes, as `PayoutOrder` and every table with a bank account name it."""
    return {
        "bank_code": account.bank_code,
        "account_number": account.account_number,
        "account_holder_name": account.account_holder_name,
    }


@dataclass(frozen=True)
class SettlementPayouts:
    db: Database
    flow: PayoutFlow

    async def pay_out(self, _: int, payload: dict[str, Any]) -> None:
        settlement_id = uuid.UUID(payload["settlementId"])
        attempt = int(payload.get("attempt", 1))
        async with self.db.sessions() as session:
            settlement = await session.get(FactorySettlement, settlement_id)
        if (
            settlement is None
            or settlement.status != SettlementStatus.PENDING
            or settlement.payout_attempt != attempt
        ):
            return  # settled by an earlier delivery, or an earlier attempt's row

        async def record(payout_id: str) -> None:
            async with self.db.sessions() as session:
                await record_payout(session, settlement_id, attempt, payout_id)

        async def refused(failure_code: str) -> None:
            async with self.db.sessions() as session:
                await payout_failed(session, settlement_id, attempt, failure_code)

        order = PayoutOrder(
            reference=payout_reference(settlement_id, attempt),
            amount=settlement.net_amount,
            **bank_account(settlement),
            description=f"Laku settlement {settlement_id}",
        )
        payout = await self.flow.settled_payout(
            order, settlement.payout_id, record=record, refused=refused
        )
        if payout is None:
            return
        async with self.db.sessions() as session:
            if payout.status == PAYOUT_SUCCEEDED:
                await payout_succeeded(session, settlement_id, attempt)
            else:  # the money did not reach the factory (REVERSED: the bank sent it back)
                await payout_failed(
                    session, settlement_id, attempt, payout.failure_code or payout.status
                )


async def _locked_pending(
    session: AsyncSession, settlement_id: uuid.UUID, attempt: int
) -> FactorySettlement | None:
    """The settlement under its row lock while payout `attempt` is outstanding, else None."""
    settlement = await session.get(
        FactorySettlement, settlement_id, with_for_update=True, populate_existing=True
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
            transfer(factory_payable(settlement.factory_id), CASH_XENDIT, settlement.net_amount),
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
                **bank_account(settlement),
            )
        )
        log.warning(
            "settlement_payout_failed",
            settlement_id=str(settlement_id),
            attempt=attempt,
            failure_code=failure_code,
        )
    await session.commit()
