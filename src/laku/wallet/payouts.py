"""A withdrawal's Xendit payout: requesting it (the outbox relay's handler), following it until
it settles, and taking Xendit's payout webhooks as hints, through the provider layer's
`PayoutFlow`.

The withdrawal's id is the payout's `reference_id` and its `Idempotency-key`, so a request
repeated after a crash or a lost answer makes one payout. A payout Xendit refuses for what it
says (HTTP 400: an unknown account, an amount out of limits) will never be made, so the
withdrawal fails and its money goes back; any other error is tried again later.

Once made, the payout is read back until it settles, as settlement's payouts are, so a
withdrawal settles even if its webhook never comes. A webhook is never believed: it only makes
wallet-service read the payout back from Xendit, check it is the withdrawal's (id, reference,
amount, IDR) and act on the status Xendit shows. That is also how a payout REVERSED after it
succeeded (which comes only by webhook) gives the money back.
"""

import uuid
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from laku.core.db import Database
from laku.core.errors import NotFound
from laku.core.rows import found
from laku.providers.xendit.payouts import (
    PAYOUT_NOT_MADE,
    PAYOUT_REVERSED,
    PAYOUT_SUCCEEDED,
    PayoutFlow,
    PayoutOrder,
    XenditPayout,
)
from laku.wallet.models import WalletWithdrawal
from laku.wallet.rules import TransactionDirection, TransactionReason, WithdrawalStatus
from laku.wallet.schemas import PayoutWebhook
from laku.wallet.wallets import Movement, by_key, locked_wallet, post

log = structlog.get_logger()


def _order(withdrawal: WalletWithdrawal) -> PayoutOrder:
    return PayoutOrder(
        reference=str(withdrawal.id),
        amount=withdrawal.amount,
        bank_code=withdrawal.bank_code,
        account_holder_name=withdrawal.account_holder_name,
        account_number=withdrawal.account_number,
        description=f"Laku wallet withdrawal {withdrawal.id}",
    )


@dataclass(frozen=True)
class WithdrawalPayouts:
    db: Database
    flow: PayoutFlow

    async def request_payout(self, _: int, payload: dict[str, Any]) -> None:
        """Request the withdrawal's payout once, then follow it until it settles."""
        withdrawal_id = uuid.UUID(payload["withdrawalId"])
        withdrawal = await self._withdrawal(withdrawal_id)
        if withdrawal is None or withdrawal.status != WithdrawalStatus.PENDING:
            return  # settled by an earlier attempt, or by its webhook

        async def record(payout_id: str) -> None:
            async with self.db.sessions() as session:
                await record_payout_id(session, withdrawal_id, payout_id)

        async def refused(failure_code: str) -> None:
            async with self.db.sessions() as session:
                await refuse_withdrawal(session, withdrawal_id, failure_code)

        payout = await self.flow.settled_payout(
            _order(withdrawal), withdrawal.payout_id, record=record, refused=refused
        )
        if payout is not None:
            await self._follow(withdrawal_id, payout)

    async def apply_webhook(self, webhook: PayoutWebhook) -> None:
        """A payout webhook, taken as a hint: the payout is read back from Xendit and, if it is
        the withdrawal's, the withdrawal follows the status Xendit shows (whatever the event
        said). Payouts that are not withdrawals' (settlements', or made outside Laku) and
        payouts that do not match are acknowledged and change nothing. Xendit unreachable
        answers 503, so Xendit sends the webhook again."""
        reported = webhook.data
        try:
            withdrawal_id = uuid.UUID(reported.reference_id)
        except ValueError:
            withdrawal_id = None
        withdrawal = await self._withdrawal(withdrawal_id) if withdrawal_id else None
        if withdrawal is None:
            log.info("payout_webhook_unknown_reference", reference_id=reported.reference_id)
            return
        expected_id = withdrawal.payout_id or reported.id
        if reported.id != expected_id:
            log.warning(
                "payout_webhook_for_other_payout",
                withdrawal_id=str(withdrawal.id),
                payout_id=reported.id,
                expected_payout_id=expected_id,
            )
            return
        payout = await self.flow.confirmed_payout(_order(withdrawal), expected_id)
        if payout is not None:
            await self._follow(withdrawal.id, payout)

    async def _follow(self, withdrawal_id: uuid.UUID, payout: XenditPayout) -> None:
        async with self.db.sessions() as session:
            await follow_payout(
                session,
                withdrawal_id,
                payout_id=payout.id,
                payout_status=payout.status,
                failure_code=payout.failure_code,
            )

    async def _withdrawal(self, withdrawal_id: uuid.UUID) -> WalletWithdrawal | None:
        async with self.db.sessions() as session:
            return await session.get(WalletWithdrawal, withdrawal_id)


async def record_payout_id(session: AsyncSession, withdrawal_id: uuid.UUID, payout_id: str) -> None:
    """Remember which Xendit payout carries the withdrawal (the webhook may have told first)."""
    await session.execute(
        update(WalletWithdrawal)
        .where(WalletWithdrawal.id == withdrawal_id, WalletWithdrawal.payout_id.is_(None))
        .values(payout_id=payout_id)
    )
    await session.commit()


async def _fail_and_reverse(
    session: AsyncSession, withdrawal: WalletWithdrawal, failure_code: str
) -> None:
    """The money did not reach the bank account (the payout failed, was cancelled or sent
    back): the withdrawal fails and its amount goes back, once (the reversal's idempotency
    key is the withdrawal's, however it came to fail)."""
    withdrawal.status = WithdrawalStatus.FAILED.value
    withdrawal.failure_code = failure_code
    if await by_key(session, _reversal_key(withdrawal.id)) is not None:
        return
    wallet = await locked_wallet(session, withdrawal.user_id, create=True)
    await post(
        session,
        wallet,
        TransactionDirection.CREDIT,
        Movement(
            user_id=withdrawal.user_id,
            amount=withdrawal.amount,
            reason=TransactionReason.WITHDRAWAL_REVERSAL,
            reference=f"withdrawal:{withdrawal.id}",
            idempotency_key=_reversal_key(withdrawal.id),
        ),
    )


def _reversal_key(withdrawal_id: uuid.UUID) -> str:
    return f"withdrawal-reversal:{withdrawal_id}"


async def refuse_withdrawal(
    session: AsyncSession, withdrawal_id: uuid.UUID, failure_code: str
) -> None:
    """Xendit refused to create the payout: nothing was sent, so the money goes back."""
    withdrawal = await session.get(
        WalletWithdrawal, withdrawal_id, with_for_update=True, populate_existing=True
    )
    if withdrawal is not None and withdrawal.status == WithdrawalStatus.PENDING:
        await _fail_and_reverse(session, withdrawal, failure_code)
    await session.commit()


async def follow_payout(
    session: AsyncSession,
    withdrawal_id: uuid.UUID,
    *,
    payout_id: str,
    payout_status: str,
    failure_code: str | None,
) -> WithdrawalStatus:
    """Settle a withdrawal by its payout's status as Xendit reports it (read back from Xendit,
    never taken from a webhook), and commit; returns the withdrawal's status. SUCCEEDED settles
    a pending withdrawal; FAILED or CANCELLED fails it and gives the money back; REVERSED (the
    bank sent the money back, even after it succeeded) does the same. Each happens once."""
    withdrawal = found(
        await session.get(
            WalletWithdrawal, withdrawal_id, with_for_update=True, populate_existing=True
        ),
        NotFound("No such withdrawal", code="withdrawal_not_found"),
    )
    if withdrawal.payout_id is None:
        withdrawal.payout_id = payout_id
    status = WithdrawalStatus(withdrawal.status)
    if payout_status == PAYOUT_SUCCEEDED:
        if status is WithdrawalStatus.PENDING:
            withdrawal.status = WithdrawalStatus.SUCCEEDED.value
        elif status is WithdrawalStatus.FAILED:
            log.error(
                "payout_succeeded_for_failed_withdrawal",
                withdrawal_id=str(withdrawal.id),
                payout_id=payout_id,
                failure_code=withdrawal.failure_code,
            )
    elif payout_status in PAYOUT_NOT_MADE and status is WithdrawalStatus.PENDING:
        await _fail_and_reverse(session, withdrawal, failure_code or payout_status)
    elif payout_status == PAYOUT_REVERSED and status is not WithdrawalStatus.FAILED:
        log.warning("payout_reversed", withdrawal_id=str(withdrawal.id), payout_id=payout_id)
        await _fail_and_reverse(session, withdrawal, PAYOUT_REVERSED)
    status = WithdrawalStatus(withdrawal.status)
    await session.commit()
    return status
