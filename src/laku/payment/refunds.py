"""Refunds into buyers' wallets: recorded with their payments' refunded totals in one
transaction, their wallet credits enqueued in it (see `bulk`), and the money nobody claims
(paid for a join group-buying never recorded) given back."""

import uuid
from collections import defaultdict
from collections.abc import Mapping

import structlog
from sqlalchemy import BigInteger, Text, Uuid, case, literal, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from laku.core.db import array_rows, insert_rows
from laku.core.errors import Conflict
from laku.core.outbox import enqueue
from laku.core.problems import problem
from laku.payment.bulk import among, locked, named
from laku.payment.models import Payment, Refund, outbox
from laku.payment.rules import (
    EscrowStatus,
    PaymentStatus,
    RefundReason,
    RefundStatus,
    escrow_held,
    refundable,
)
from laku.payment.schemas import RefundItem, RefundsCreate, RefundsOut
from laku.payment.tasks import CREDIT_REFUNDS, REPORT_ESCROW_REFUNDS

log = structlog.get_logger()


PaymentNotRefundable = problem(
    Conflict,
    "payment_not_refundable",
    "Only a paid payment whose escrow is held (or, for a cancelled order, released) can be "
    "refunded",
)
RefundExceedsPayment = problem(
    Conflict, "refund_exceeds_payment", "The refund is more than what is left of the payment"
)
RefundReferenceReused = problem(
    Conflict, "refund_reference_reused", "The reference was used for another refund"
)


async def refund(session: AsyncSession, request: RefundsCreate) -> RefundsOut:
    """Record the refunds, raise their payments' refunded totals (a whole refund makes the
    payment and its escrow `refunded`) and enqueue their wallet credits, then commit."""
    items = request.items
    payments = await locked(
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
            select(Refund).where(among(Refund.reference, [item.reference for item in items]))
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
        raise RefundReferenceReused(f"Used for another refund: {named(reused)}")
    new_items = [item for item in items if item.reference not in earlier]
    asked: dict[uuid.UUID, int] = defaultdict(int)
    reasons: dict[uuid.UUID, set[RefundReason]] = defaultdict(set)
    for item in new_items:
        asked[item.payment_id] += item.amount
        reasons[item.payment_id].add(item.reason)
    not_refundable = [
        f"{payment_id} ({payments[payment_id].status}, escrow {payments[payment_id].escrow_status})"
        for payment_id in asked
        if not refundable(
            payments[payment_id].status, payments[payment_id].escrow_status, reasons[payment_id]
        )
    ]
    if not_refundable:
        raise PaymentNotRefundable(f"Not refundable for that reason: {named(not_refundable)}")
    too_much = [
        f"{payment_id} ({amount} asked, {left} left)"
        for payment_id, amount in asked.items()
        if amount > (left := payments[payment_id].amount - payments[payment_id].refunded_amount)
    ]
    if too_much:
        raise RefundExceedsPayment(f"More than is left: {named(too_much)}")
    if not new_items:
        return RefundsOut(refunded=0, already_refunded=len(items), amount=0)

    refund_ids = [uuid.uuid4() for _ in new_items]
    # One statement for the whole call (the ORM's bulk insert sent a statement per row).
    new = array_rows(
        ("id", Uuid(), refund_ids),
        ("payment_id", Uuid(), [item.payment_id for item in new_items]),
        ("reference", Text(), [item.reference for item in new_items]),
        ("amount", BigInteger(), [item.amount for item in new_items]),
        ("reason", Text(), [item.reason.value for item in new_items]),
    )
    try:
        await session.execute(
            insert_rows(Refund.__table__, new, status=literal(RefundStatus.PENDING.value))
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
    refunds = array_rows(
        ("payment_id", Uuid(), list(asked)),
        ("amount", BigInteger(), list(asked.values())),
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


async def refund_unclaimed(session: AsyncSession, payment_id: uuid.UUID) -> RefundsOut | None:
    """A payment paid for a reference group-buying has no participant for (its join never
    recorded one): what is left of it goes back to the buyer's wallet, once (the refund's
    reference is the payment's). None when nothing is held to give back."""
    payment = await session.get(Payment, payment_id)
    if payment is None or not escrow_held(payment.status, payment.escrow_status):
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
