"""The join saga (design 7): validate → reserve stock → participant `pending_payment` → escrow
payment → `{participant, paymentUrl}`. A step failing after the reservation undoes what came
before it: the stock is released, the participant cancelled (`join_failed`, never deleted, so
money paid for it is found and given back) and its payment given up by reference through the
outbox, whether or not it was made (one made after this call stopped waiting is expired; one
not made yet never will be).

What a crash leaves half done lapses (design 15): the stock is held only until the invoice
expires plus a grace period, and group-buying's sweeper cancels a join still unpaid then.

Joins are rate limited per client address and per buyer, and one buyer's units awaiting payment
in a group buy are capped (`unpaid_units_limit`): a free account cannot hold all the stock with
joins it never pays for (and what it does hold lapses with the invoices).

The participant records the price its invoice asks for: priced again under the session row's
share lock (a payment since the quote may have moved the tier), and invoiced at that price.

No database connection is held across a call to another service: each database step is its own
short transaction, so a few pooled connections serve many concurrent joins.
"""

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from sqlalchemy import ScalarSelect, and_, func, insert, select, update

from laku.core import rate_limit
from laku.core.db import Database
from laku.core.errors import Conflict, DomainError, Forbidden, InvalidInput, UpstreamUnavailable
from laku.core.http import ServiceCallError
from laku.core.money import format_rupiah
from laku.core.outbox import enqueue
from laku.core.problems import problem
from laku.core.rate_limit import Limit
from laku.core.settings import RateLimits
from laku.group_buying.models import (
    GroupBuyingSession,
    Participant,
    SessionVariant,
    outbox,
    rate_limits,
)
from laku.group_buying.notices import joined_notice, notify_later
from laku.group_buying.rules import (
    CancelReason,
    ParticipantStatus,
    current_unit_price,
    is_joinable,
    participant_reference,
    reservation_group,
)
from laku.group_buying.schemas import JoinOut, JoinRequest
from laku.group_buying.sessions import (
    SessionClosed,
    by_reference,
    now,
    participant_out,
    session_not_found,
)
from laku.group_buying.tasks import EXPIRE_PAYMENT_BY_REFERENCE, RELEASE_RESERVATION
from laku.payment.client import PaymentClient, PaymentCreate, PaymentOut
from laku.warehouse.client import WarehouseClient

log = structlog.get_logger()

# How many times (a second apart) a join waits for its own payment still being created.
_PAYMENT_IN_PROGRESS_WAITS = 4


PriceMismatch = problem(Conflict, "price_mismatch", "The price has changed")
InsufficientStock = problem(Conflict, "insufficient_stock", "Not enough stock")
UnpaidUnitsLimit = problem(Conflict, "unpaid_units_limit", "Too many units awaiting payment")


@dataclass(frozen=True)
class Quote:
    session_id: uuid.UUID
    session_code: str
    description: str
    end_time: datetime
    unit_price: int
    total_price: int


@dataclass(frozen=True)
class Hold:
    """How long a join's invoice lasts, and its stock a little longer (a late webhook)."""

    invoice_expires_at: datetime
    expires_at: datetime


def _priced(group: GroupBuyingSession, variant: SessionVariant, request: JoinRequest) -> Quote:
    """The server's price for this join; a client that sent another price is refused."""
    unit_price = current_unit_price(group)
    total_price = unit_price * request.quantity
    if (request.unit_price not in (None, unit_price)) or (
        request.total_price not in (None, total_price)
    ):
        raise PriceMismatch(
            f"The price is now {format_rupiah(unit_price)} per unit, "
            f"{format_rupiah(total_price)} for {request.quantity}"
        )
    return Quote(
        session_id=group.id,
        session_code=group.session_code,
        description=(
            f"{group.session_code}: {group.product_name} ({variant.variant_name}) "
            f"x {request.quantity}"
        ),
        end_time=group.end_time,
        unit_price=unit_price,
        total_price=total_price,
    )


def _check_joinable(group: GroupBuyingSession) -> None:
    if not is_joinable(group, now()):
        raise SessionClosed(f"Session {group.session_code} is {group.status} or past its endTime")


def _unpaid_units(buyer_id: uuid.UUID) -> ScalarSelect[int]:
    """The buyer's units awaiting payment in the session the statement selects."""
    return (
        select(func.coalesce(func.sum(Participant.quantity), 0))
        .where(
            Participant.session_id == GroupBuyingSession.id,
            Participant.user_id == buyer_id,
            Participant.status == ParticipantStatus.PENDING_PAYMENT,
        )
        .scalar_subquery()
    )


def _check_unpaid_units(unpaid: int, quantity: int, max_unpaid_units: int) -> None:
    """One account may not hold a group buy's stock with joins it does not pay for: its units
    awaiting payment there, this join's included, stay within `max_unpaid_units`."""
    if unpaid + quantity > max_unpaid_units:
        raise UnpaidUnitsLimit(
            f"At most {max_unpaid_units} units may await payment in one group buy; "
            f"{unpaid} already do. Pay for them, or let them lapse, before joining for more"
        )


@dataclass(frozen=True)
class JoinSaga:
    db: Database
    warehouse: WarehouseClient
    payments: PaymentClient
    wake_outbox: Callable[[], None]
    invoice_duration: timedelta
    # The warehouse's longest hold, and how long a join's hold outlasts its invoice.
    longest_hold: timedelta
    hold_grace: timedelta
    limits: RateLimits
    max_unpaid_units: int

    def _hold(self, quote: Quote) -> Hold:
        invoice_life = min(self.invoice_duration, self.longest_hold - self.hold_grace)
        invoice_expires_at = min(quote.end_time, now() + invoice_life)
        return Hold(invoice_expires_at, invoice_expires_at + self.hold_grace)

    async def join(
        self, session_ref: str, request: JoinRequest, buyer_id: uuid.UUID, address: str
    ) -> JoinOut:
        if request.user_id is not None and request.user_id != buyer_id:
            raise Forbidden("userId must be the caller's own id", code="user_mismatch")
        await self._claim(buyer_id, address)
        quote = await self._quote(session_ref, request, buyer_id)
        hold = self._hold(quote)

        participant_id = uuid.uuid4()
        reference = participant_reference(participant_id)
        try:
            await self._reserve(reference, request, quote.session_id, hold)
        except BaseException as exc:
            if not (isinstance(exc, DomainError) and exc.status < 500):
                # Not refused: the stock may have been reserved before the answer was lost
                # (or the caller went away). Released now; a reserve landing later is refused.
                await asyncio.shield(self._undo(participant_id, reference, recorded=False))
            raise
        recorded = False
        try:
            price = await self._add_participant(participant_id, buyer_id, request, quote, hold)
            recorded = True
            payment = await self._create_payment(
                PaymentCreate(
                    reference=reference,
                    user_id=buyer_id,
                    amount=price.total_price,  # what the participant records, nothing else
                    description=price.description,
                    expires_at=hold.invoice_expires_at,
                ),
                idempotency_key=f"join-payment:{participant_id}",
            )
            return await self._attach_payment(participant_id, payment, price)
        except BaseException as exc:
            # Shielded: a request cancelled mid-join still gives its stock back.
            await asyncio.shield(self._undo(participant_id, reference, recorded=recorded))
            if isinstance(exc, DomainError) or not isinstance(exc, Exception):
                raise
            raise UpstreamUnavailable("The join could not be completed; nothing was kept") from exc

    async def _create_payment(self, request: PaymentCreate, *, idempotency_key: str) -> PaymentOut:
        """The join's payment. A retry of the call (its first answer lost to a timeout) may
        find the first creation still asking Xendit for the invoice: that is this join's own
        payment on its way, so it is waited for rather than given up."""
        for _ in range(_PAYMENT_IN_PROGRESS_WAITS):
            try:
                return await self.payments.create_payment(request, idempotency_key=idempotency_key)
            except ServiceCallError as exc:
                if exc.code != "payment_in_progress":
                    raise
            await asyncio.sleep(1)
        return await self.payments.create_payment(request, idempotency_key=idempotency_key)

    async def _claim(self, buyer_id: uuid.UUID, address: str) -> None:
        """Joins per client address and per buyer (429 over either)."""
        async with self.db.sessions() as session:
            await rate_limit.claim(
                session,
                rate_limits,
                [
                    Limit(f"join:address:{address}", self.limits.join_per_address),
                    Limit(f"join:buyer:{buyer_id}", self.limits.join_per_buyer),
                ],
            )

    async def _quote(self, session_ref: str, request: JoinRequest, buyer_id: uuid.UUID) -> Quote:
        """Refused before any stock is reserved; checked again, serialised, when recorded. One
        read with no transaction (a quote holds nothing): the session, the variant if it is one
        of the session's, and the buyer's units awaiting payment there."""
        async with self.db.autocommit() as session:
            row = (
                await session.execute(
                    by_reference(session_ref)
                    .add_columns(SessionVariant, _unpaid_units(buyer_id))
                    .outerjoin(
                        SessionVariant,
                        and_(
                            SessionVariant.session_id == GroupBuyingSession.id,
                            SessionVariant.variant_id == request.variant_id,
                        ),
                    )
                )
            ).one_or_none()
        if row is None:
            raise session_not_found(session_ref)
        group, variant, unpaid = row
        _check_joinable(group)
        if variant is None:
            raise InvalidInput(
                f"{request.variant_id} is not a variant of this session's product",
                code="unknown_variant",
            )
        _check_unpaid_units(unpaid, request.quantity, self.max_unpaid_units)
        return _priced(group, variant, request)

    async def _reserve(
        self, reference: str, request: JoinRequest, session_id: uuid.UUID, hold: Hold
    ) -> None:
        try:
            await self.warehouse.reserve(
                reference,
                request.variant_id,
                request.quantity,
                group=reservation_group(session_id),
                expires_at=hold.expires_at,
            )
        except ServiceCallError as exc:
            if exc.code == "inventory_not_found":  # never stocked: nothing is available
                raise InsufficientStock("This variant has no stock") from exc
            raise

    async def _add_participant(
        self,
        participant_id: uuid.UUID,
        buyer_id: uuid.UUID,
        request: JoinRequest,
        quote: Quote,
        hold: Hold,
    ) -> Quote:
        """Written under a share lock of the session row: a cancel (which locks it for update)
        either sees this participant or is seen by it, and no payment moves the price between
        this pricing and the insert. Returns the price recorded, which the invoice asks for: a
        payment since the quote may have moved the tier (a client that sent the quote's price
        is then refused with `price_mismatch`)."""
        async with self.db.sessions() as session:
            # One buyer's joins of this session record one at a time, so two at once cannot
            # both pass the unpaid units check (the next statement reads after this lock).
            await session.execute(
                select(
                    func.pg_advisory_xact_lock(
                        func.hashtextextended(f"unpaid-units:{quote.session_id}:{buyer_id}", 0)
                    )
                )
            )
            group, variant, unpaid = (
                await session.execute(
                    select(GroupBuyingSession, SessionVariant, _unpaid_units(buyer_id))
                    .join(SessionVariant, SessionVariant.session_id == GroupBuyingSession.id)
                    .where(
                        GroupBuyingSession.id == quote.session_id,
                        SessionVariant.variant_id == request.variant_id,
                    )
                    .with_for_update(read=True, of=GroupBuyingSession)
                    .execution_options(populate_existing=True)
                )
            ).one()  # sessions and their variants are never deleted
            _check_joinable(group)
            _check_unpaid_units(unpaid, request.quantity, self.max_unpaid_units)
            price = _priced(group, variant, request)
            if price.unit_price != quote.unit_price:
                log.info(
                    "join_repriced",
                    participant_id=str(participant_id),
                    quoted=quote.unit_price,
                    recorded=price.unit_price,
                )
            # A plain INSERT of the table: the row is not needed as an object here, and the
            # ORM's unit of work costs a join more CPU than the statement itself.
            await session.execute(
                insert(Participant.__table__).values(
                    id=participant_id,
                    session_id=group.id,
                    user_id=buyer_id,
                    variant_id=request.variant_id,
                    quantity=request.quantity,
                    unit_price=price.unit_price,
                    total_price=price.total_price,
                    status=ParticipantStatus.PENDING_PAYMENT,
                    reservation_reference=participant_reference(participant_id),
                    hold_expires_at=hold.expires_at,
                )
            )
            await session.commit()
            return price

    async def _attach_payment(
        self, participant_id: uuid.UUID, payment: PaymentOut, quote: Quote
    ) -> JoinOut:
        """The buyer is told where to pay (through the outbox) in the same transaction."""
        if payment.invoice_url is None:
            raise UpstreamUnavailable("payment-service returned no invoice URL")
        async with self.db.sessions() as session:
            participant = await session.scalar(
                update(Participant)
                .where(Participant.id == participant_id)
                .values(payment_id=payment.id, payment_url=payment.invoice_url)
                .returning(Participant)
                # This session holds no participant to bring up to date.
                .execution_options(synchronize_session=False)
            )
            if participant is None or participant.status == ParticipantStatus.CANCELLED:
                await session.commit()
                # Cancelled while the invoice was being made; the cancel released its stock.
                raise SessionClosed("The session was cancelled while joining")
            await notify_later(
                session,
                joined_notice(
                    participant,
                    quote.session_code,
                    quote.description,
                    payment.invoice_url,
                    payment.expires_at,
                ),
            )
            await session.commit()
        self.wake_outbox()
        return JoinOut(
            participant=participant_out(participant, quote.session_code),
            payment_url=payment.invoice_url,
        )

    async def _undo(self, participant_id: uuid.UUID, reference: str, *, recorded: bool) -> None:
        """Release the stock (now if warehouse-service answers, else through the outbox), and
        once a participant was recorded, cancel it (`join_failed`) and give its payment up by
        reference through the outbox: a payment made after this call stopped waiting for it
        is expired, and one not made yet never will be. If this too fails, the hold lapses
        and the sweeper cancels the participant."""
        released = True
        try:
            await self.warehouse.release(reference)
        except Exception as exc:
            log.warning("join_undo_release_deferred", reference=reference, error=repr(exc))
            released = False
        try:
            async with self.db.sessions() as session:
                if not released:
                    await enqueue(session, outbox, RELEASE_RESERVATION, {"reference": reference})
                if recorded:
                    await session.execute(
                        update(Participant)
                        .where(
                            Participant.id == participant_id,
                            Participant.status == ParticipantStatus.PENDING_PAYMENT,
                        )
                        .values(
                            status=ParticipantStatus.CANCELLED,
                            cancelled_at=now(),
                            cancel_reason=CancelReason.JOIN_FAILED,
                        )
                    )
                    await enqueue(
                        session, outbox, EXPIRE_PAYMENT_BY_REFERENCE, {"reference": reference}
                    )
                await session.commit()
        except Exception:
            log.exception("join_undo_failed", reference=reference)
            return
        self.wake_outbox()
