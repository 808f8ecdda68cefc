"""Closing group buys (seed steps 5-8, design 7 "Close"), and settling cancelled ones.

A closer first claims a session past its end time, with a lease it renews while it works
(`close_claims`): two closes at the same moment never both close it, and a process that dies
mid-close leaves it to the next run. The close then goes step by step (`CloseStep`),
recording each step on the session row; every step is safe to repeat (a refund is made once
per reference, orders once per participant, stock moved once per reservation, and a batched
call repeated with its key gets its first answer), so a run after a crash continues where the
dead one stopped and doubles nothing.

Every step is batched: per session a fixed number of calls to each service, in chunks of what
the callee accepts, never a call per participant; the chunks of refunds and escrow releases
are sent a few at a time (`CALLS_IN_FLIGHT`), and naming the paid reservations to the
warehouse runs beside the refunds and the orders, which need nothing of it. No database
connection is held across a call to another service.
"""

import asyncio
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

import structlog
from sqlalchemy import Uuid, any_, bindparam, func, select, update
from sqlalchemy.dialects.postgresql import ARRAY

from laku.core.batches import chunks, digest, in_flight, together
from laku.core.db import Database
from laku.core.errors import Conflict, DomainError
from laku.core.http import until_answered
from laku.core.problems import problem
from laku.group_buying.close_claims import Claim, claim_due_session, renewing
from laku.group_buying.metrics import CLOSE_SECONDS, CLOSES
from laku.group_buying.models import GroupBuyingSession, Participant
from laku.group_buying.notices import notify_outcome_later
from laku.group_buying.rules import (
    OPEN_STATUSES,
    CancelReason,
    CloseOutcome,
    CloseStep,
    ParticipantStatus,
    SessionStatus,
    refund_reference,
    reservation_group,
    tier_for,
    tier_prices,
    tier_refund,
)
from laku.group_buying.schemas import ClosedSessionOut, ProcessExpiredOut, SessionOut
from laku.group_buying.sessions import find_session, get_session
from laku.order.client import OrderClient
from laku.payment.client import (
    MAX_PAYMENTS_PER_CALL,
    MAX_REFUNDS_PER_CALL,
    PaymentClient,
    RefundItem,
    RefundReason,
)
from laku.warehouse.client import (
    MAX_REFERENCES_PER_CALL,
    FulfilmentOut,
    FulfilmentStatus,
    WarehouseClient,
)

log = structlog.get_logger()

# Sessions one process-expired call closes at most; the scheduler calls again for the rest.
MAX_SESSIONS_PER_RUN = 50
# Reservations named in one release (warehouse-service takes up to 20,000).
RELEASES_PER_CALL = 5_000
# Chunks of one step in flight at once: the callee works on one while the database writes
# the other. More only stretch each call past the client's timeout on two cores.
CALLS_IN_FLIGHT = 2


def _call_key(purpose: str, session_id: uuid.UUID, names: Iterable[str]) -> str:
    """The idempotency key of a batched call: a different batch is a call of its own."""
    return f"{purpose}:{session_id}:{digest(names)}"


StockNotReceived = problem(
    Conflict, "stock_not_received", "The warehouse has not fulfilled the session yet"
)
SessionNotAwaitingStock = problem(
    Conflict, "session_not_awaiting_stock", "The session is not waiting for stock"
)


@dataclass(frozen=True)
class Member:
    """A participant, as much of it as closing needs."""

    id: uuid.UUID
    status: str
    cancel_reason: str | None
    payment_id: uuid.UUID | None
    paid: bool
    quantity: int
    unit_price: int
    total_price: int
    final_unit_price: int | None
    reservation_reference: str

    def tier_refund(self) -> int:
        """What the difference to the final unit price comes to over its quantity."""
        assert self.final_unit_price is not None  # set by the close's first step
        return tier_refund(self.unit_price, self.final_unit_price, self.quantity)

    def refund(self, session_id: uuid.UUID, amount: int, reason: RefundReason) -> RefundItem:
        assert self.payment_id is not None  # a paid participant has its payment
        return RefundItem(
            payment_id=self.payment_id,
            amount=amount,
            reason=reason,
            reference=refund_reference(session_id, self.id),
        )


async def _members(db: Database, session_id: uuid.UUID) -> list[Member]:
    async with db.sessions() as session:
        rows = await session.execute(
            select(
                Participant.id,
                Participant.status,
                Participant.cancel_reason,
                Participant.payment_id,
                Participant.paid_at.is_not(None),
                Participant.quantity,
                Participant.unit_price,
                Participant.total_price,
                Participant.final_unit_price,
                Participant.reservation_reference,
            )
            .where(Participant.session_id == session_id)
            .order_by(Participant.id)  # the same batches, so the same keys, on every run
        )
        return [Member(*row) for row in rows]


@dataclass(frozen=True)
class Closer:
    db: Database
    warehouse: WarehouseClient
    payments: PaymentClient
    orders: OrderClient
    lease: timedelta

    # process-expired ---------------------------------------------------------------------

    async def close_expired(self) -> ProcessExpiredOut:
        """Close every session past its end time still forming, active or moq_reached (up to
        MAX_SESSIONS_PER_RUN), one after another."""
        processed: list[ClosedSessionOut] = []
        while len(processed) < MAX_SESSIONS_PER_RUN:
            claim = await claim_due_session(self.db, self.lease)
            if claim is None:
                return ProcessExpiredOut(processed=processed, more=False)
            started = time.perf_counter()
            closed = await self._close_claimed(claim)
            if closed is not None:
                CLOSES.labels(closed.outcome).inc()
                CLOSE_SECONDS.observe(time.perf_counter() - started)
                processed.append(closed)
        return ProcessExpiredOut(processed=processed, more=True)

    async def _close_claimed(self, claim: Claim) -> ClosedSessionOut | None:
        async with renewing(self.db, claim, self.lease):
            try:
                outcome = await self._close(claim)
            except Exception as exc:
                # The claim is left to lapse: the next run, not this one, tries again.
                log.exception("close_unfinished", session_id=str(claim.session_id))
                return ClosedSessionOut(
                    session_id=claim.session_id,
                    session_code=claim.session_code,
                    outcome=CloseOutcome.UNFINISHED,
                    error=exc.code if isinstance(exc, DomainError) else type(exc).__name__,
                )
        if outcome is None:
            return None
        log.info("session_closed", session_id=str(claim.session_id), outcome=outcome)
        return ClosedSessionOut(
            session_id=claim.session_id, session_code=claim.session_code, outcome=outcome
        )

    # The steps of a close ----------------------------------------------------------------

    async def _close(self, claim: Claim) -> CloseOutcome | None:
        """None when an admin cancelled the session since it was claimed."""
        group = await self._cancel_unpaid(claim)
        if group is None:
            return None
        session_id = group.id
        reached = group.paid_quantity >= group.target_moq
        members = await _members(self.db, session_id)
        step = CloseStep(group.close_step)
        if step is CloseStep.UNPAID_CANCELLED:
            await self._release_unpaid(session_id, members)
            step = await self._record(claim, CloseStep.UNPAID_RELEASED)
        if not reached:
            if step is CloseStep.UNPAID_RELEASED:
                await self._refund(session_id, members, reached)
                await self._record(claim, CloseStep.REFUNDED, refunded_in_full=True)
            await self.warehouse.release_group(reservation_group(session_id))
            await self._finish(claim, SessionStatus.FAILED)
            return CloseOutcome.FAILED
        await together(
            self._confirm_paid(session_id, members),
            self._refund_and_order(claim, step, members),
        )
        fulfilment = await until_answered(
            lambda: self.warehouse.fulfil_group(reservation_group(session_id), group.product_id)
        )
        if fulfilment.status is FulfilmentStatus.FULFILLED:
            await self._release_escrow(session_id, members, "close-escrow")
            await self._finish(claim, SessionStatus.SUCCESS)
            return CloseOutcome.SUCCESS
        await self._finish(claim, SessionStatus.PENDING_STOCK)
        # Stock that came in since the warehouse answered was reported while the session
        # was still closing, and refused: it is looked for once more now.
        if await self._complete_when_stock_in(session_id, "close-escrow"):
            return CloseOutcome.SUCCESS
        return CloseOutcome.PENDING_STOCK

    async def _refund_and_order(self, claim: Claim, step: CloseStep, members: list[Member]) -> None:
        """A group that reached its MOQ: the tier refunds and the orders, side by side, since
        neither needs the other (both follow from the final unit prices set when the unpaid
        were cancelled); recorded once both are done. Each call carries its key, so a close
        resumed after a crash asks again and gets the answers already given."""
        session_id = claim.session_id
        if step not in (CloseStep.UNPAID_RELEASED, CloseStep.REFUNDED):
            return
        create_orders = until_answered(
            lambda: self.orders.create_bulk(
                session_id, idempotency_key=f"close-orders:{session_id}"
            )
        )
        if step is CloseStep.UNPAID_RELEASED:
            await together(self._refund(session_id, members, reached=True), create_orders)
        else:  # refunded by a close that stopped before ordering
            await create_orders
        await self._record(claim, CloseStep.ORDERED)

    async def _cancel_unpaid(self, claim: Claim) -> GroupBuyingSession | None:
        """Under the session row's lock, which payment events take too: the unpaid are
        cancelled, so the paid quantity is final, and every paid participant's final unit
        price (the final tier's, whatever the variant) is set."""
        async with self.db.sessions() as session:
            group = await session.scalar(
                select(GroupBuyingSession)
                .where(GroupBuyingSession.id == claim.session_id)
                .with_for_update()
                .execution_options(populate_existing=True)
            )
            if group is None or group.status not in OPEN_STATUSES:
                await session.commit()
                return None
            if group.close_step is None:
                await session.execute(
                    update(Participant)
                    .where(
                        Participant.session_id == group.id,
                        Participant.status == ParticipantStatus.PENDING_PAYMENT,
                    )
                    .values(
                        status=ParticipantStatus.CANCELLED,
                        cancelled_at=func.now(),
                        cancel_reason=CancelReason.SESSION_CLOSED,
                    )
                )
                if group.paid_quantity >= group.target_moq:
                    final_tier = tier_for(group.paid_quantity, group.target_moq)
                    tier_price = tier_prices(group).price(final_tier)
                    await session.execute(
                        update(Participant)
                        .where(
                            Participant.session_id == group.id,
                            Participant.status == ParticipantStatus.PAID,
                        )
                        .values(final_unit_price=tier_price)
                    )
                group.close_step = CloseStep.UNPAID_CANCELLED
            await session.commit()
            return group

    async def _release_unpaid(self, session_id: uuid.UUID, members: list[Member]) -> None:
        """The invoices of the joins the close cancelled are expired, and the stock of every
        cancelled join released (one cancelled earlier may still have its release waiting in
        the outbox) before the paid joins' stock is taken out."""
        expiring = [
            m.payment_id
            for m in members
            if m.cancel_reason == CancelReason.SESSION_CLOSED and m.payment_id is not None
        ]
        for chunk in chunks(expiring, MAX_PAYMENTS_PER_CALL):
            expired = await self.payments.expire_many(
                chunk, idempotency_key=_call_key("close-expire", session_id, map(str, chunk))
            )
            if expired.already_paid:
                # Paid at the last moment: their PAID events give their money back.
                log.warning(
                    "paid_as_session_closed",
                    session_id=str(session_id),
                    payments=expired.already_paid,
                )
        releasing = [
            m.reservation_reference for m in members if m.status == ParticipantStatus.CANCELLED
        ]
        for chunk in chunks(releasing, RELEASES_PER_CALL):
            await self.warehouse.release_group(reservation_group(session_id), chunk)

    async def _confirm_paid(self, session_id: uuid.UUID, members: list[Member]) -> None:
        """Name the paid participants' reservations to the warehouse, whose fulfilment takes
        only those from stock and releases the rest of the group."""
        paid = [m.reservation_reference for m in members if m.status == ParticipantStatus.PAID]
        # One chunk at a time: each holds the group's stock locked while the warehouse works.
        for chunk in chunks(paid, MAX_REFERENCES_PER_CALL):
            confirmed = await until_answered(
                lambda chunk=chunk: self.warehouse.confirm_group(
                    reservation_group(session_id), chunk
                )
            )
            if confirmed.unknown:
                log.error(
                    "paid_without_reservation",
                    session_id=str(session_id),
                    count=len(confirmed.unknown),
                )

    async def _refund(self, session_id: uuid.UUID, members: list[Member], reached: bool) -> None:
        """A group that missed its MOQ gives every paid participant all of it back; one that
        reached it, the difference to the final unit price (nothing where there is none)."""
        paid = [m for m in members if m.status == ParticipantStatus.PAID]
        if reached:
            items = [
                m.refund(session_id, amount, RefundReason.TIER_REFUND)
                for m in paid
                if (amount := m.tier_refund()) > 0
            ]
        else:
            items = [m.refund(session_id, m.total_price, RefundReason.GROUP_FAILED) for m in paid]
        await self._refund_items(session_id, items, "close-refund")

    async def _refund_items(
        self, session_id: uuid.UUID, items: list[RefundItem], purpose: str
    ) -> None:
        await in_flight(
            (
                lambda chunk=chunk: until_answered(
                    lambda: self.payments.refund(
                        chunk,
                        idempotency_key=_call_key(
                            purpose,
                            session_id,
                            (f"{item.reference}={item.amount}" for item in chunk),
                        ),
                    )
                )
                for chunk in chunks(items, MAX_REFUNDS_PER_CALL)
            ),
            CALLS_IN_FLIGHT,
        )

    async def _release_escrow(
        self, session_id: uuid.UUID, members: list[Member], purpose: str
    ) -> None:
        paid = [
            m.payment_id
            for m in members
            if m.status == ParticipantStatus.PAID and m.payment_id is not None
        ]
        if not paid:
            return
        # Recorded on each payment: what a factory's settlement adds up.
        async with self.db.sessions() as session:
            factory_id = await session.scalar(
                select(GroupBuyingSession.factory_id).where(GroupBuyingSession.id == session_id)
            )
        assert factory_id is not None  # the session being closed exists
        await in_flight(
            (
                lambda chunk=chunk: until_answered(
                    lambda: self.payments.release_escrow(
                        chunk,
                        factory_id=factory_id,
                        group_session_id=session_id,
                        idempotency_key=_call_key(purpose, session_id, map(str, chunk)),
                    )
                )
                for chunk in chunks(paid, MAX_PAYMENTS_PER_CALL)
            ),
            CALLS_IN_FLIGHT,
        )

    async def _record(
        self, claim: Claim, step: CloseStep, *, refunded_in_full: bool = False
    ) -> CloseStep:
        async with self.db.sessions.begin() as session:
            await session.execute(
                update(GroupBuyingSession)
                .where(GroupBuyingSession.id == claim.session_id)
                .values(close_step=step)
            )
            if refunded_in_full:
                await session.execute(
                    update(Participant)
                    .where(
                        Participant.session_id == claim.session_id,
                        Participant.status == ParticipantStatus.PAID,
                    )
                    .values(status=ParticipantStatus.REFUNDED)
                )
        return step

    async def _finish(self, claim: Claim, status: SessionStatus) -> None:
        """The session ends, and its buyers are told how (through the outbox, in batches)."""
        async with self.db.sessions.begin() as session:
            finished = await session.scalar(
                update(GroupBuyingSession)
                .where(
                    GroupBuyingSession.id == claim.session_id,
                    GroupBuyingSession.status.in_(list(OPEN_STATUSES)),
                )
                .values(
                    status=status,
                    close_step=CloseStep.DONE,
                    close_claimed_until=None,
                    close_claim_token=None,
                )
                .returning(GroupBuyingSession.id)
            )
            if finished is not None:
                await notify_outcome_later(session, claim.session_id)

    # Stock received ----------------------------------------------------------------------

    async def stock_received(self, session_ref: str) -> SessionOut:
        """The warehouse (or an admin) reports that a session waiting for stock has it: it
        becomes stock_received, its escrow is released and it succeeds. Reporting a session
        that has succeeded again changes nothing."""
        async with self.db.sessions() as session:
            group = await find_session(session, session_ref)
        if group.status in (SessionStatus.PENDING_STOCK, SessionStatus.STOCK_RECEIVED):
            if not await self._complete_when_stock_in(group.id, "stock-received-escrow"):
                raise StockNotReceived(f"Session {group.session_code} still waits for stock")
        elif group.status != SessionStatus.SUCCESS:
            raise SessionNotAwaitingStock(
                f"Session {group.session_code} is {group.status}, not waiting for stock"
            )
        async with self.db.sessions() as session:
            return await get_session(session, str(group.id))

    async def _complete_when_stock_in(self, session_id: uuid.UUID, purpose: str) -> bool:
        """False while the warehouse has not fulfilled the session's reservations."""
        fulfilment = await self.warehouse.get_or_none(
            f"/api/reservation-groups/{reservation_group(session_id)}/fulfilment", FulfilmentOut
        )
        if fulfilment is None or fulfilment.status is not FulfilmentStatus.FULFILLED:
            return False
        await self._move(session_id, SessionStatus.PENDING_STOCK, SessionStatus.STOCK_RECEIVED)
        await self._release_escrow(session_id, await _members(self.db, session_id), purpose)
        await self._move(session_id, SessionStatus.STOCK_RECEIVED, SessionStatus.SUCCESS)
        return True

    async def _move(
        self, session_id: uuid.UUID, before: SessionStatus, after: SessionStatus
    ) -> None:
        async with self.db.sessions.begin() as session:
            await session.execute(
                update(GroupBuyingSession)
                .where(GroupBuyingSession.id == session_id, GroupBuyingSession.status == before)
                .values(status=after)
            )

    # Cancelled sessions and late payments (through the outbox) ---------------------------

    async def settle_cancelled(self, session_id: uuid.UUID) -> None:
        """What an admin's cancel leaves to other services, in batched calls: the unpaid
        invoices expired, the session's stock released, the paid refunded in full."""
        members = [
            m
            for m in await _members(self.db, session_id)
            if m.cancel_reason == CancelReason.SESSION_CANCELLED
        ]
        expiring = [m.payment_id for m in members if not m.paid and m.payment_id is not None]
        for chunk in chunks(expiring, MAX_PAYMENTS_PER_CALL):
            await self.payments.expire_many(
                chunk, idempotency_key=_call_key("cancel-expire", session_id, map(str, chunk))
            )
        await self.warehouse.release_group(reservation_group(session_id))
        owed = [m for m in members if m.paid and m.status == ParticipantStatus.CANCELLED]
        items = [m.refund(session_id, m.total_price, RefundReason.GROUP_CANCELLED) for m in owed]
        await self._refund_items(session_id, items, "cancel-refund")
        await self._mark_refunded([m.id for m in owed])

    async def refund_late_payment(self, participant_id: uuid.UUID) -> None:
        """A join paid after it was cancelled (its invoice expired, its session closed or
        was cancelled, the join failed or its hold lapsed) gets all of it back, for the
        reason payment-service tells the buyer."""
        async with self.db.sessions() as session:
            participant = await session.get(Participant, participant_id)
        if (
            participant is None
            or participant.status != ParticipantStatus.CANCELLED
            or participant.paid_at is None
            or participant.payment_id is None
        ):
            return
        reason = {
            CancelReason.SESSION_CANCELLED: RefundReason.GROUP_CANCELLED,
            CancelReason.JOIN_FAILED: RefundReason.JOIN_FAILED,
            CancelReason.HOLD_LAPSED: RefundReason.JOIN_FAILED,
        }.get(participant.cancel_reason or "", RefundReason.GROUP_FAILED)
        item = RefundItem(
            payment_id=participant.payment_id,
            amount=participant.total_price,
            reason=reason,
            reference=refund_reference(participant.session_id, participant.id),
        )
        await self._refund_items(participant.session_id, [item], "late-payment-refund")
        await self._mark_refunded([participant.id])

    async def _mark_refunded(self, participant_ids: list[uuid.UUID]) -> None:
        if not participant_ids:
            return
        async with self.db.sessions.begin() as session:
            await session.execute(
                update(Participant)
                .where(
                    Participant.id == any_(bindparam(None, participant_ids, type_=ARRAY(Uuid()))),
                    Participant.status == ParticipantStatus.CANCELLED,
                )
                .values(status=ParticipantStatus.REFUNDED)
            )


async def run_schedule(closer: Closer, interval: timedelta) -> None:
    """process-expired every `interval`, in the background for as long as the process runs.
    Other processes may run it too: the claims keep them from closing a session twice."""
    while True:
        await asyncio.sleep(interval.total_seconds())
        try:
            more = True
            while more:  # a run stops at its limit of sessions; the rest are due too
                result = await closer.close_expired()
                more = result.more
        except Exception:
            log.exception("scheduled_close_failed")
