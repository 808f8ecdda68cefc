"""Withdrawals: a buyer takes money out of the wallet to a bank account. The debit and the
payout request are one transaction; `payouts.py` follows the payout to its outcome."""

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from laku.core.errors import NotFound
from laku.core.outbox import enqueue
from laku.core.schemas import Page
from laku.wallet.models import WalletWithdrawal, outbox
from laku.wallet.rules import TransactionDirection, TransactionReason, WithdrawalStatus
from laku.wallet.schemas import WithdrawalCreate, WithdrawalOut
from laku.wallet.tasks import REQUEST_PAYOUT
from laku.wallet.wallets import Movement, locked_wallet, newest_first, post


async def create_withdrawal(
    session: AsyncSession, user_id: uuid.UUID, body: WithdrawalCreate
) -> WalletWithdrawal:
    """Take the amount from the wallet and ask for its payout, in one transaction: the payout
    request goes through the outbox, so it is made once the money is taken, and only then."""
    withdrawal_id = uuid.uuid4()
    wallet = await locked_wallet(session, user_id, create=False)
    withdrawal = WalletWithdrawal(
        id=withdrawal_id,
        user_id=user_id,
        amount=body.amount,
        bank_code=body.bank_code.value,
        account_number=body.account_number,
        account_holder_name=body.account_holder_name,
        status=WithdrawalStatus.PENDING.value,
    )
    session.add(withdrawal)
    await post(
        session,
        wallet,
        TransactionDirection.DEBIT,
        Movement(
            user_id=user_id,
            amount=body.amount,
            reason=TransactionReason.WITHDRAWAL,
            reference=f"withdrawal:{withdrawal_id}",
            idempotency_key=f"withdrawal:{withdrawal_id}",
        ),
    )
    await enqueue(session, outbox, REQUEST_PAYOUT, {"withdrawalId": str(withdrawal_id)})
    await session.commit()
    await session.refresh(withdrawal)
    return withdrawal


async def list_withdrawals(
    session: AsyncSession, user_id: uuid.UUID, limit: int, offset: int
) -> Page[WithdrawalOut]:
    return await newest_first(session, WalletWithdrawal, WithdrawalOut, user_id, limit, offset)


async def get_withdrawal(
    session: AsyncSession, withdrawal_id: uuid.UUID, *, owner: uuid.UUID
) -> WalletWithdrawal:
    """The owner's withdrawal; another user's is not found."""
    withdrawal = await session.get(WalletWithdrawal, withdrawal_id)
    if withdrawal is None or withdrawal.user_id != owner:
        raise NotFound("No such withdrawal", code="withdrawal_not_found")
    return withdrawal
