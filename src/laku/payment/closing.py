"""Closing group buys in bulk: refunds into buyers' wallets, escrow released, unpaid payments
expired. A group of 10,000 is closed in a few calls, so each call handles thousands of payments
with a handful of statements, never one per payment.

Each call locks the payments it names (in id order, so concurrent calls cannot deadlock),
checks all of them, then changes all of them in one transaction or none. What must reach
wallet-service or Xendit is enqueued in the outbox in that transaction, so the call answers at
once and the delivery, retried until it succeeds, happens exactly when the change does.
"""

import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Row,
    Uuid,
    any_,
    bindparam,
    case,
    func,
    literal,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from laku.core.db import Database
from laku.core.errors import Conflict, NotFound
from laku.core.outbox import enqueue
from laku.payment.models import Payment, Refund, outbox
from laku.payment.schemas import (
    CancelledOrderRefundOut,
    EscrowReleasedOut,
    EscrowReleaseOut,
    EscrowStatus,
    PaymentsExpireOut,
    PaymentStatus,
    RefundItem,
    RefundReason,
    RefundsCreate,
    RefundsOut,
    ReleasedSessionOut,
)
from laku.payment.service import ABANDONED_AFTER, PaymentInProgress, Payments
from laku.wallet.client import MovementCreate, MovementReason, WalletClient

log = structlog.get_logger()

# Outbox kinds: one wallet credit call per refund batch, one Xendit expiry per invoice (Xendit
# expires invoices one at a time, and each is retried on its own).
CREDIT_REFUNDS = "credit_refunds"
EXPIRE_INVOICE = "expire_invoice"
# Refunds of escrow already released to a factory (a cancelled order), reported to
# settlement-service: the factory may have been settled for that money and then owes it back.
REPORT_ESCROW_REFUNDS = "report_escrow_refunds"

REFUND_PENDING = "pending"
REFUND_SUCCEEDED = "succeeded"

_WALLET_REASONS = {
    RefundReason.TIER_REFUND: MovementReason.TIER_REFUND,
    RefundReason.GROUP_FAILED: MovementReason.GROUP_FAILED_REFUND,
    RefundReason.GROUP_CANCELLED: MovementReason.SESSION_CANCELLED_REFUND,
    RefundReason.ORDER_CANCELLED: MovementReason.ORDER_CANCELLED_REFUND,
    # The wallet knows no reason of its own for it: a whole refund like a failed group's.
    RefundReason.JOIN_FAILED: MovementReason.GROUP_FAILED_REFUND,
}
# How many offending payments an error names; the rest are counted.
_NAMED_IN_ERRORS = 10


class PaymentNotRefundable(Conflict):
    code = "payment_not_refundable"
    title = (
        "Only a paid payment whose escrow is held (or, for a cancelled order, released) can be "
        "refunded"
    )


class RefundExceedsPayment(Conflict):
    code = "refund_exceeds_payment"
    title = "The refund is more than what is left of the payment"


class RefundReferenceReused(Conflict):
    code = "refund_reference_reused"
    title = "The reference was used for another refund"


class EscrowNotHeld(Conflict):
    code = "escrow_not_held"
    title = "Only a paid payment whose escrow is held can be released"


def _among(column: InstrumentedAttribute[Any], values: Sequence[Any]) -> ColumnElement[bool]:
    """`column = ANY(:values)`: one array parameter however many values there are."""
    return column == any_(bindparam(None, list(values), type_=ARRAY(column.type)))


def _named(problems: Sequence[str]) -> str:
    shown = ", ".join(problems[:_NAMED_IN_ERRORS])
    more = len(problems) - _NAMED_IN_ERRORS
    return f"{shown} and {more} more" if more > 0 else shown


async def _locked(
    session: AsyncSession, payment_ids: Iterable[uuid.UUID], *columns: Any
) -> dict[uuid.UUID, Row[Any]]:
    """The payments' `columns`, their rows locked until the transaction ends; every payment
    must exist."""
    ids = sorted(set(payment_ids))
    rows = (
        await session.execute(
            select(Payment.id, *columns)
            .where(_among(Payment.id, ids))
            .order_by(Payment.id)
            .with_for_update()
        )
    ).all()
    found = {row.id: row for row in rows}
    missing = [str(payment_id) for payment_id in ids if payment_id not in found]
    if missing:
        raise NotFound(f"No such payment: {_named(missing)}", code="payment_not_found")
    return found


def _escrow_held(row: Row[Any]) -> bool:
    return row.status == PaymentStatus.PAID and row.escrow_status == EscrowStatus.HELD


def _refundable(row: Row[Any], reasons: set[RefundReason]) -> bool:
    """Escrow held; a cancelled order's refund also once the escrow went to the factory (the
    group succeeded, then the order was called off), and only that: released escrow is
    otherwise the factory's."""
    if _escrow_held(row):
        return True
    return (
        reasons == {RefundReason.ORDER_CANCELLED}
        and row.status == PaymentStatus.PAID
        and row.escrow_status == EscrowStatus.RELEASED
    )


# Refunds -------------------------------------------------------------------------------------


async def refund(session: AsyncSession, request: RefundsCreate) -> RefundsOut:
    """Record the refunds, raise their payments' refunded totals (a whole refund makes the
    payment and its escrow `refunded`) and enqueue their wallet credits, then commit."""
    items = request.items
    payments = await _locked(
        session,
        (item.payment_id for item in items),
        Payment.status,
        Payment.escrow_status,
        Payment.amount,
        Payment.refunded_amount,
        Payment.released_to_factory_id,
        Payment.escrow_released_at,
    )
    # Under the payments' locks: a concurrent call with these references has committed or waits.
    earlier = {
        refund.reference: refund
        for refund in await session.scalars(
            select(Refund).where(_among(Refund.reference, [item.reference for item in items]))
        )
    }
    reused = [
        item.reference
        for item in items
        if (refund := earlier.get(item.reference)) is not None
        and (refund.payment_id, refund.amount, refund.reason)
        != (item.payment_id, item.amount, item.reason.value)
    ]
    if reused:
        raise RefundReferenceReused(f"Used for another refund: {_named(reused)}")
    new_items = [item for item in items if item.reference not in earlier]
    asked: dict[uuid.UUID, int] = defaultdict(int)
    reasons: dict[uuid.UUID, set[RefundReason]] = defaultdict(set)
    for item in new_items:
        asked[item.payment_id] += item.amount
        reasons[item.payment_id].add(item.reason)
    not_refundable = [
        f"{payment_id} ({payments[payment_id].status}, escrow {payments[payment_id].escrow_status})"
        for payment_id in asked
        if not _refundable(payments[payment_id], reasons[payment_id])
    ]
    if not_refundable:
        raise PaymentNotRefundable(f"Not refundable for that reason: {_named(not_refundable)}")
    too_much = [
        f"{payment_id} ({amount} asked, {left} left)"
        for payment_id, amount in asked.items()
        if amount > (left := payments[payment_id].amount - payments[payment_id].refunded_amount)
    ]
    if too_much:
        raise RefundExceedsPayment(f"More than is left: {_named(too_much)}")
    if not new_items:
        return RefundsOut(refunded=0, already_refunded=len(items), amount=0)

    refund_ids = [uuid.uuid4() for _ in new_items]
    try:
        await session.execute(
            insert(Refund),
            [
                {
                    "id": refund_id,
                    "payment_id": item.payment_id,
                    "reference": item.reference,
                    "amount": item.amount,
                    "reason": item.reason.value,
                    "status": REFUND_PENDING,
                }
                for refund_id, item in zip(refund_ids, new_items, strict=True)
            ],
        )
    except IntegrityError as exc:
        # A reference refunded at this moment for a payment outside this call's locks.
        await session.rollback()
        raise RefundReferenceReused("A reference was used for another refund just now") from exc
    await _add_refunded(session, asked)
    await enqueue(
        session, outbox, CREDIT_REFUNDS, {"refundIds": [str(refund_id) for refund_id in refund_ids]}
    )
    if of_released := [
        {
            "refundId": str(refund_id),
            "paymentId": str(item.payment_id),
            "factoryId": str(payment.released_to_factory_id),
            "amount": item.amount,
            "escrowReleasedAt": payment.escrow_released_at.isoformat(),
        }
        for refund_id, item in zip(refund_ids, new_items, strict=True)
        if (payment := payments[item.payment_id]).escrow_status == EscrowStatus.RELEASED
    ]:
        await enqueue(session, outbox, REPORT_ESCROW_REFUNDS, {"refunds": of_released})
    await session.commit()
    amount = sum(asked.values())
    log.info("refunded", refunds=len(new_items), payments=len(asked), amount=amount)
    return RefundsOut(
        refunded=len(new_items), already_refunded=len(items) - len(new_items), amount=amount
    )


async def _add_refunded(session: AsyncSession, asked: Mapping[uuid.UUID, int]) -> None:
    """One UPDATE for every payment refunded; a payment refunded in whole, escrow and all,
    becomes `refunded` (SET reads the row as it was, so `refunded_amount + amount` is the new
    total)."""
    refunds = (
        func.unnest(
            bindparam(None, list(asked), type_=ARRAY(Uuid())),
            bindparam(None, list(asked.values()), type_=ARRAY(BigInteger())),
        )
        .table_valued("payment_id", "amount")
        .render_derived()
    )
    whole = Payment.refunded_amount + refunds.c.amount == Payment.amount
    await session.execute(
        update(Payment)
        .where(Payment.id == refunds.c.payment_id)
        .values(
            refunded_amount=Payment.refunded_amount + refunds.c.amount,
            status=case((whole, PaymentStatus.REFUNDED.value), else_=Payment.status),
            escrow_status=case((whole, EscrowStatus.REFUNDED.value), else_=Payment.escrow_status),
        )
        .execution_options(synchronize_session=False)
    )


# Escrow release ------------------------------------------------------------------------------


async def release_escrow(
    session: AsyncSession,
    payment_ids: Sequence[uuid.UUID],
    factory_id: uuid.UUID,
    group_session_id: uuid.UUID,
) -> EscrowReleaseOut:
    """Release the held escrow of paid payments (what was paid less what was refunded) to the
    factory of their group buy, recorded on each for its settlement, then commit; already
    released ones are left as they are."""
    payments = await _locked(
        session,
        payment_ids,
        Payment.status,
        Payment.escrow_status,
        Payment.amount,
        Payment.refunded_amount,
        Payment.escrow_released_at,
    )
    held = [row for row in payments.values() if _escrow_held(row)]
    # Released before, even if its order was cancelled (and refunded in whole) since.
    released_before = sum(row.escrow_released_at is not None for row in payments.values())
    not_held = [
        f"{row.id} ({row.status}, escrow {row.escrow_status})"
        for row in payments.values()
        if not _escrow_held(row) and row.escrow_released_at is None
    ]
    if not_held:
        raise EscrowNotHeld(f"Escrow not held: {_named(not_held)}")
    if held:
        await session.execute(
            update(Payment)
            .where(_among(Payment.id, [row.id for row in held]))
            .values(
                escrow_status=EscrowStatus.RELEASED.value,
                escrow_released_at=func.now(),
                released_to_factory_id=factory_id,
                group_session_id=group_session_id,
            )
            .execution_options(synchronize_session=False)
        )
        await session.commit()
    amount = sum(row.amount - row.refunded_amount for row in held)
    log.info(
        "escrow_released",
        payments=len(held),
        amount=amount,
        factory_id=str(factory_id),
        group_session_id=str(group_session_id),
    )
    return EscrowReleaseOut(released=len(held), already_released=released_before, amount=amount)


async def released_to(
    session: AsyncSession, factory_id: uuid.UUID, start: datetime, end: datetime
) -> EscrowReleasedOut:
    """What escrow released to the factory in [start, end), per group buy: what each payment
    released in the period has left after its refunds (one indexed range scan), with the
    cancelled orders' refunds among them. Both are read in one snapshot, so settlement-service
    knows exactly which refunds the total has taken off (and which it learns of later)."""
    await session.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"))
    rows = (
        await session.execute(
            select(
                Payment.group_session_id,
                func.sum(Payment.amount - Payment.refunded_amount).label("amount"),
                func.count().label("payments"),
            )
            .where(
                Payment.released_to_factory_id == factory_id,
                Payment.escrow_released_at >= start,
                Payment.escrow_released_at < end,
            )
            .group_by(Payment.group_session_id)
            .order_by(Payment.group_session_id)
        )
    ).all()
    sessions = [
        ReleasedSessionOut(
            group_session_id=row.group_session_id, amount=int(row.amount), payments=row.payments
        )
        for row in rows
    ]
    cancelled_order_refunds = (
        await session.execute(
            select(Refund.id, Refund.payment_id, Refund.amount, Payment.escrow_released_at)
            .join(Payment, Payment.id == Refund.payment_id)
            .where(
                Payment.released_to_factory_id == factory_id,
                Payment.escrow_released_at >= start,
                Payment.escrow_released_at < end,
                Refund.reason == RefundReason.ORDER_CANCELLED.value,
            )
            .order_by(Refund.id)
        )
    ).all()
    return EscrowReleasedOut(
        factory_id=factory_id,
        from_=start,
        to=end,
        total_amount=sum(s.amount for s in sessions),
        payments=sum(s.payments for s in sessions),
        sessions=sessions,
        cancelled_order_refunds=[
            CancelledOrderRefundOut(
                refund_id=row.id,
                payment_id=row.payment_id,
                amount=row.amount,
                escrow_released_at=row.escrow_released_at,
            )
            for row in cancelled_order_refunds
        ],
    )


# Expiring in bulk ----------------------------------------------------------------------------


async def expire_many(session: AsyncSession, payment_ids: Sequence[uuid.UUID]) -> PaymentsExpireOut:
    """Record pending payments expired and enqueue the closing of each invoice at Xendit, then
    commit. Not reported to group-buying: its closer asked for these expiries."""
    payments = await _locked(
        session,
        payment_ids,
        Payment.status,
        Payment.xendit_invoice_id,
        (Payment.updated_at < func.now() - ABANDONED_AFTER).label("abandoned"),
    )
    pending = [row for row in payments.values() if row.status == PaymentStatus.PENDING]
    if any(row.xendit_invoice_id is None and not row.abandoned for row in pending):
        # Its invoice may be created (and handed to the buyer) at any moment.
        raise PaymentInProgress("A payment's invoice is being created", retry_after=1)
    invoiced = [row.id for row in pending if row.xendit_invoice_id is not None]
    # A creation that died before its invoice was recorded: no buyer has that invoice's URL,
    # so failing the payment closes it (a retry of the creation could take it over).
    abandoned = [row.id for row in pending if row.xendit_invoice_id is None]
    if invoiced:
        await session.execute(
            update(Payment)
            .where(_among(Payment.id, invoiced))
            .values(status=PaymentStatus.EXPIRED.value, expired_at=func.now())
            .execution_options(synchronize_session=False)
        )
        await session.execute(
            outbox.insert().from_select(
                ["kind", "payload"],
                select(
                    literal(EXPIRE_INVOICE),
                    func.jsonb_build_object(
                        "paymentId", Payment.id, "invoiceId", Payment.xendit_invoice_id
                    ),
                ).where(_among(Payment.id, invoiced)),
            )
        )
    if abandoned:
        await session.execute(
            update(Payment)
            .where(_among(Payment.id, abandoned))
            .values(status=PaymentStatus.FAILED.value)
            .execution_options(synchronize_session=False)
        )
    await session.commit()
    closed_before = (PaymentStatus.EXPIRED, PaymentStatus.FAILED)
    already_expired = sum(row.status in closed_before for row in payments.values())
    log.info("payments_expired", invoiced=len(invoiced), abandoned=len(abandoned))
    return PaymentsExpireOut(
        expired=len(pending),
        already_expired=already_expired,
        already_paid=len(payments) - len(pending) - already_expired,
    )


# Money nobody claims ---------------------------------------------------------------------------


async def refund_unclaimed(session: AsyncSession, payment_id: uuid.UUID) -> RefundsOut | None:
    """A payment paid for a reference group-buying has no participant for (its join never
    recorded one): what is left of it goes back to the buyer's wallet, once (the refund's
    reference is the payment's). None when nothing is held to give back."""
    payment = await session.get(Payment, payment_id)
    if payment is None or not (
        payment.status == PaymentStatus.PAID and payment.escrow_status == EscrowStatus.HELD
    ):
        await session.rollback()
        return None
    left = payment.amount - payment.refunded_amount
    log.warning("unclaimed_payment_refunded", payment_code=payment.payment_code, amount=left)
    item = RefundItem(
        payment_id=payment.id,
        amount=left,
        reason=RefundReason.JOIN_FAILED,
        reference=f"unclaimed:{payment.reference}",
    )
    return await refund(session, RefundsCreate(items=[item]))


# Outbox deliveries ---------------------------------------------------------------------------


class ClosingDeliveries:
    """The outbox handlers for what the calls above enqueue."""

    def __init__(self, db: Database, wallet: WalletClient, payments: Payments):
        self._db = db
        self._wallet = wallet
        self._payments = payments

    async def credit_refunds(self, row_id: int, payload: dict[str, Any]) -> None:
        """Credit a batch of refunds into their buyers' wallets in one call, then mark them
        succeeded. Each credit's key is its refund's, so a retry credits nothing twice."""
        refund_ids = [uuid.UUID(refund_id) for refund_id in payload["refundIds"]]
        async with self._db.sessions() as session:
            refunds = (
                await session.execute(
                    select(
                        Refund.id, Refund.amount, Refund.reason, Refund.reference, Payment.user_id
                    )
                    .join(Payment, Payment.id == Refund.payment_id)
                    .where(_among(Refund.id, refund_ids))
                    .order_by(Refund.id)
                )
            ).all()
        credits = [
            MovementCreate(
                user_id=refund.user_id,
                amount=refund.amount,
                reason=_WALLET_REASONS[RefundReason(refund.reason)],
                reference=refund.reference,
                idempotency_key=f"refund:{refund.id}",
            )
            for refund in refunds
        ]
        await self._wallet.credit_bulk(credits, idempotency_key=f"refund-credits:{row_id}")
        async with self._db.sessions.begin() as session:
            await session.execute(
                update(Refund)
                .where(_among(Refund.id, refund_ids), Refund.status == REFUND_PENDING)
                .values(status=REFUND_SUCCEEDED)
            )

    async def expire_invoice(self, _: int, payload: dict[str, Any]) -> None:
        await self._payments.close_invoice_of_expired(
            uuid.UUID(payload["paymentId"]), payload["invoiceId"]
        )
