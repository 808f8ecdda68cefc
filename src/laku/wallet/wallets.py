"""Wallets and their transaction ledger.

Every change to a balance locks the user's wallet row, changes the balance and writes its
transaction in one database transaction, so a balance always equals the sum of its user's
credits minus debits and never goes below zero. Idempotency keys are unique in the ledger: a
credit or debit asked for twice happens once.
"""

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Text,
    Uuid,
    any_,
    bindparam,
    literal,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from laku.core.db import array_rows, insert_rows
from laku.core.errors import Conflict
from laku.core.problems import problem
from laku.core.rows import page
from laku.core.schemas import Page, WireModel
from laku.wallet.models import UserWallet, WalletTransaction, WalletWithdrawal
from laku.wallet.rules import CURRENCY, TransactionDirection, TransactionReason
from laku.wallet.schemas import BulkCreditsOut, MovementCreate, WalletOut, WalletTransactionOut

Out = TypeVar("Out", bound=WireModel)

InsufficientBalance = problem(Conflict, "insufficient_balance", "Not enough balance")


@dataclass(frozen=True)
class Movement:
    """What a credit or debit moves, for whom and why."""

    user_id: uuid.UUID
    amount: int
    reason: TransactionReason
    reference: str
    idempotency_key: str

    @classmethod
    def from_request(cls, body: MovementCreate) -> "Movement":
        return cls(
            user_id=body.user_id,
            amount=body.amount,
            reason=TransactionReason(body.reason.value),
            reference=body.reference,
            idempotency_key=body.idempotency_key,
        )


@dataclass(frozen=True)
class Recorded:
    transaction: WalletTransaction
    created: bool  # False: the idempotency key had moved money before


async def get_wallet(session: AsyncSession, user_id: uuid.UUID) -> WalletOut:
    """A user who was never credited has an empty wallet rather than none."""
    wallet = await session.get(UserWallet, user_id)
    if wallet is None:
        return WalletOut(user_id=user_id, balance=0, currency=CURRENCY)
    return WalletOut.model_validate(wallet)


async def list_transactions(
    session: AsyncSession, user_id: uuid.UUID, limit: int, offset: int
) -> Page[WalletTransactionOut]:
    return await newest_first(
        session, WalletTransaction, WalletTransactionOut, user_id, limit, offset
    )


async def newest_first(
    session: AsyncSession,
    model: type[WalletTransaction | WalletWithdrawal],
    out: type[Out],
    user_id: uuid.UUID,
    limit: int,
    offset: int,
) -> Page[Out]:
    """A page of the user's transactions or withdrawals, newest first."""
    rows, total = await page(
        session,
        select(model).where(model.user_id == user_id),
        model.created_at.desc(),
        model.id.desc(),
        limit=limit,
        offset=offset,
    )
    return Page(
        items=[out.model_validate(row) for row in rows],
        total=total,
        limit=limit,
        offset=offset,
    )


async def locked_wallet(
    session: AsyncSession, user_id: uuid.UUID, *, create: bool
) -> UserWallet | None:
    """The user's wallet, locked until the transaction ends; made empty first if `create`."""
    if create:
        await session.execute(
            pg_insert(UserWallet).values(user_id=user_id, balance=0).on_conflict_do_nothing()
        )
    return await session.get(UserWallet, user_id, with_for_update=True, populate_existing=True)


async def post(
    session: AsyncSession,
    wallet: UserWallet | None,
    direction: TransactionDirection,
    movement: Movement,
) -> WalletTransaction:
    """Apply a movement to a locked wallet (None: the user has none, so nothing to debit)."""
    balance = wallet.balance if wallet is not None else 0
    if direction is TransactionDirection.DEBIT:
        if wallet is None or balance < movement.amount:
            raise InsufficientBalance(
                f"The balance is {balance}; {movement.amount} cannot be taken from it"
            )
        wallet.balance = balance - movement.amount
    else:
        assert wallet is not None  # credits create the wallet before locking it
        wallet.balance = balance + movement.amount
    transaction = WalletTransaction(
        id=uuid.uuid4(),
        user_id=movement.user_id,
        direction=direction.value,
        amount=movement.amount,
        reason=movement.reason.value,
        reference=movement.reference,
        idempotency_key=movement.idempotency_key,
        balance_after=wallet.balance,
    )
    session.add(transaction)
    await session.flush()
    return transaction


async def by_key(session: AsyncSession, idempotency_key: str) -> WalletTransaction | None:
    return await session.scalar(
        select(WalletTransaction).where(WalletTransaction.idempotency_key == idempotency_key)
    )


def _replay(
    existing: WalletTransaction, direction: TransactionDirection, movement: Movement
) -> Recorded:
    """The transaction an idempotency key already made, if it was asked for the same thing."""
    asked = (direction.value, movement.user_id, movement.amount, movement.reason.value)
    made = (existing.direction, existing.user_id, existing.amount, existing.reason)
    if asked != made or existing.reference != movement.reference:
        raise _key_reused()
    return Recorded(existing, created=False)


def _key_reused() -> Conflict:
    return Conflict(
        "This idempotencyKey was used for another transaction", code="idempotency_key_reused"
    )


async def move(
    session: AsyncSession, direction: TransactionDirection, movement: Movement
) -> Recorded:
    """Credit or debit once per idempotency key, and commit."""
    if existing := await by_key(session, movement.idempotency_key):
        return _replay(existing, direction, movement)
    try:
        wallet = await locked_wallet(
            session, movement.user_id, create=direction is TransactionDirection.CREDIT
        )
        # Requests for one user wait for each other on the lock: look again under it.
        if existing := await by_key(session, movement.idempotency_key):
            return _replay(existing, direction, movement)
        transaction = await post(session, wallet, direction, movement)
        await session.commit()
    except IntegrityError:
        # The same key used at the same moment for another user's wallet: the unique key let
        # one of them through.
        await session.rollback()
        existing = await by_key(session, movement.idempotency_key)
        if existing is None:
            raise
        return _replay(existing, direction, movement)
    return Recorded(transaction, created=True)


async def credit_bulk(session: AsyncSession, movements: Sequence[Movement]) -> BulkCreditsOut:
    """Credit many wallets in one transaction and commit: each idempotency key once, and if
    any key was used for something else, nothing at all. Missing wallets are made empty first
    and every wallet is locked in user-id order, so concurrent batches over the same wallets
    wait for each other rather than deadlock."""
    users = sorted({movement.user_id for movement in movements})
    wallets = array_rows(("user_id", Uuid(), users))
    await session.execute(
        insert_rows(UserWallet.__table__, wallets, balance=literal(0)).on_conflict_do_nothing()
    )
    balances: dict[uuid.UUID, int] = {
        row.user_id: row.balance
        for row in await session.execute(
            select(UserWallet.user_id, UserWallet.balance)
            .where(_among(UserWallet.user_id, users))
            .order_by(UserWallet.user_id)
            .with_for_update()
        )
    }
    # Under the locks: a concurrent batch with these keys for these users has committed or
    # waits behind this one.
    keys = [movement.idempotency_key for movement in movements]
    earlier = {
        transaction.idempotency_key: transaction
        for transaction in await session.scalars(
            select(WalletTransaction).where(_among(WalletTransaction.idempotency_key, keys))
        )
    }
    new: list[Movement] = []
    for movement in movements:
        if existing := earlier.get(movement.idempotency_key):
            _replay(existing, TransactionDirection.CREDIT, movement)  # refuses another body
        else:
            new.append(movement)
    if not new:
        return BulkCreditsOut(credited=0, already_credited=len(movements))

    balances_after = []
    for movement in new:
        balances[movement.user_id] += movement.amount
        balances_after.append(balances[movement.user_id])
    # One statement however many credits: compiled once (a multi-row VALUES is compiled again
    # for every count).
    credits = array_rows(
        ("id", Uuid(), [uuid.uuid4() for _ in new]),
        ("user_id", Uuid(), [movement.user_id for movement in new]),
        ("amount", BigInteger(), [movement.amount for movement in new]),
        ("reason", Text(), [movement.reason.value for movement in new]),
        ("reference", Text(), [movement.reference for movement in new]),
        ("idempotency_key", Text(), [movement.idempotency_key for movement in new]),
        ("balance_after", BigInteger(), balances_after),
    )
    table = WalletTransaction.__table__
    inserted = await session.scalars(
        insert_rows(table, credits, direction=literal(TransactionDirection.CREDIT.value))
        .on_conflict_do_nothing(index_elements=[table.c.idempotency_key])
        .returning(table.c.id)
    )
    if len(inserted.all()) != len(new):
        # A key taken at this moment for a wallet outside this batch's locks.
        await session.rollback()
        raise _key_reused()
    credited_users = sorted({movement.user_id for movement in new})
    totals = array_rows(
        ("user_id", Uuid(), credited_users),
        ("balance", BigInteger(), [balances[user_id] for user_id in credited_users]),
    )
    await session.execute(
        update(UserWallet)
        .where(UserWallet.user_id == totals.c.user_id)
        .values(balance=totals.c.balance)
        .execution_options(synchronize_session=False)
    )
    await session.commit()
    return BulkCreditsOut(credited=len(new), already_credited=len(movements) - len(new))


def _among(column: InstrumentedAttribute[Any], values: Sequence[Any]) -> ColumnElement[bool]:
    """`column = ANY(:values)`: one array parameter however many values there are."""
    return column == any_(bindparam(None, list(values), type_=ARRAY(column.type)))
