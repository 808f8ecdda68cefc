"""wallet-service's part of `laku audit`: every balance against its transactions, withdrawals
against their debits and reversals, and the refund credits streamed for the check that traces
each one to payment-service's refund."""

from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from laku.core.audit import InvariantOut, checked_rows, invariant, keyed_page, total
from laku.wallet.models import UserWallet, WalletTransaction, WalletWithdrawal
from laku.wallet.rules import TransactionDirection, TransactionReason, WithdrawalStatus
from laku.wallet.schemas import AuditCreditOut

# Credits that payment-service's refunds make; each must trace to one refund.
REFUND_REASONS = (
    TransactionReason.TIER_REFUND,
    TransactionReason.GROUP_FAILED_REFUND,
    TransactionReason.SESSION_CANCELLED_REFUND,
    TransactionReason.ORDER_CANCELLED_REFUND,
)


async def balances_match_transactions(session: AsyncSession) -> InvariantOut:
    """Every wallet's balance is the sum of its credits less its debits."""
    credit = WalletTransaction.direction == TransactionDirection.CREDIT.value
    signed = case((credit, WalletTransaction.amount), else_=-WalletTransaction.amount)
    sums = (
        select(
            WalletTransaction.user_id,
            func.sum(signed).label("net"),
            func.count().label("transactions"),
        )
        .group_by(WalletTransaction.user_id)
        .subquery()
    )
    per_wallet = (
        select(
            func.coalesce(UserWallet.user_id, sums.c.user_id).label("user_id"),
            func.coalesce(UserWallet.balance, 0).label("balance"),
            func.coalesce(sums.c.net, 0).label("net"),
            func.coalesce(sums.c.transactions, 0).label("transactions"),
        )
        .select_from(UserWallet)
        .outerjoin(sums, sums.c.user_id == UserWallet.user_id, full=True)
        .subquery()
    )
    return await checked_rows(
        session,
        "wallet.balance_is_sum_of_transactions",
        per_wallet,
        key=per_wallet.c.user_id,
        broken=per_wallet.c.balance != per_wallet.c.net,
        figures={
            "wallets": func.count(),
            "balance": total(per_wallet.c.balance),
            "transactionsNet": total(per_wallet.c.net),
            "transactions": total(per_wallet.c.transactions),
        },
        describe=lambda row: f"{row.user_id} (balance {row.balance}, transactions {row.net})",
    )


async def withdrawals_traced(session: AsyncSession) -> InvariantOut:
    """Every withdrawal took its amount once (`withdrawal:<id>`), a failed one gave it back
    once (`withdrawal-reversal:<id>`), and every reversal gives back a failed withdrawal."""
    debit = WalletTransaction.__table__.alias("debit")
    reversal = WalletTransaction.__table__.alias("reversal")
    rows = (
        await session.execute(
            select(
                WalletWithdrawal.id,
                WalletWithdrawal.status,
                WalletWithdrawal.amount,
                debit.c.amount.label("debited"),
                reversal.c.amount.label("reversed"),
            )
            .outerjoin(
                debit,
                and_(
                    debit.c.idempotency_key == func.concat("withdrawal:", WalletWithdrawal.id),
                    debit.c.direction == TransactionDirection.DEBIT.value,
                    debit.c.user_id == WalletWithdrawal.user_id,
                ),
            )
            .outerjoin(
                reversal,
                and_(
                    reversal.c.idempotency_key
                    == func.concat("withdrawal-reversal:", WalletWithdrawal.id),
                    reversal.c.direction == TransactionDirection.CREDIT.value,
                    reversal.c.user_id == WalletWithdrawal.user_id,
                ),
            )
            .where(
                or_(
                    debit.c.amount.is_distinct_from(WalletWithdrawal.amount),
                    case(
                        (
                            WalletWithdrawal.status == WithdrawalStatus.FAILED.value,
                            reversal.c.amount.is_distinct_from(WalletWithdrawal.amount),
                        ),
                        else_=reversal.c.amount.is_not(None),
                    ),
                )
            )
            .order_by(WalletWithdrawal.id)
        )
    ).all()
    withdrawals = WalletWithdrawal.__table__
    # Reversals of no failed withdrawal of that amount and user.
    orphans = list(
        await session.scalars(
            select(WalletTransaction.idempotency_key)
            .where(
                WalletTransaction.reason == TransactionReason.WITHDRAWAL_REVERSAL.value,
                ~select(withdrawals.c.id)
                .where(
                    func.concat("withdrawal-reversal:", withdrawals.c.id)
                    == WalletTransaction.idempotency_key,
                    withdrawals.c.status == WithdrawalStatus.FAILED.value,
                    withdrawals.c.amount == WalletTransaction.amount,
                    withdrawals.c.user_id == WalletTransaction.user_id,
                )
                .exists(),
            )
            .order_by(WalletTransaction.idempotency_key)
        )
    )
    totals = (
        await session.execute(
            select(
                func.count(),
                total(WalletWithdrawal.amount),
                func.count().filter(WalletWithdrawal.status == WithdrawalStatus.FAILED.value),
                func.coalesce(
                    func.sum(WalletWithdrawal.amount).filter(
                        WalletWithdrawal.status == WithdrawalStatus.FAILED.value
                    ),
                    0,
                ),
            )
        )
    ).one()
    return invariant(
        "wallet.withdrawals_debited_and_reversed_once",
        {
            "withdrawals": totals[0],
            "withdrawn": int(totals[1]),
            "failedWithdrawals": totals[2],
            "reversed": int(totals[3]),
        },
        [
            *(
                f"withdrawal {row.id} ({row.status}, {row.amount}; debited {row.debited}, "
                f"reversed {row.reversed})"
                for row in rows
            ),
            *(f"transaction {key} (a reversal of no failed withdrawal)" for key in orphans),
        ],
    )


async def audit(session: AsyncSession) -> list[InvariantOut]:
    """Balances against their transactions; withdrawals against their debits and reversals."""
    return [await balances_match_transactions(session), await withdrawals_traced(session)]


async def refund_credits_page(
    session: AsyncSession, after: str | None, through: str | None, limit: int
) -> list[AuditCreditOut]:
    """Credits made for refunds, by idempotency key (byte order) in (after, through]."""
    query = select(
        WalletTransaction.idempotency_key,
        WalletTransaction.user_id,
        WalletTransaction.amount,
        WalletTransaction.reason,
        WalletTransaction.created_at,
    ).where(
        WalletTransaction.direction == TransactionDirection.CREDIT.value,
        WalletTransaction.reason.in_([reason.value for reason in REFUND_REASONS]),
    )
    key = WalletTransaction.idempotency_key.collate("C")
    return await keyed_page(
        session, query, key, AuditCreditOut, after=after, through=through, limit=limit
    )
