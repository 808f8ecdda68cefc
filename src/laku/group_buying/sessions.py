"""Group-buying sessions and their participants: opening, reading, availability, payment
events, cancelling.

Locks are always taken session row first, then participant rows, so the writers (join, payment
events, cancel, close) never wait on each other in a cycle. Work for other services (releasing
stock, expiring invoices, refunds) is written to the outbox in the same transaction as the
change causing it.
"""

import secrets
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import structlog
from sqlalchemy import Select, distinct, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from laku.core.errors import Conflict, InvalidInput, NotFound
from laku.core.outbox import enqueue
from laku.core.problems import problem
from laku.core.rows import found, page
from laku.core.schemas import WireModel
from laku.group_buying.models import (
    Base,
    GroupBuyingSession,
    Participant,
    SessionVariant,
    outbox,
)
from laku.group_buying.notices import notify_later, notify_outcome_later, paid_notice
from laku.group_buying.rules import (
    OPEN_STATUSES,
    AvailabilityStatus,
    CancelReason,
    ParticipantStatus,
    PaymentEventStatus,
    SessionStatus,
    TierPrices,
    current_unit_price,
    fill_basis_points,
    is_joinable,
    participant_named,
    status_after_payment,
    tier_for,
)
from laku.group_buying.schemas import (
    ParticipantOut,
    ParticipationOut,
    PaymentEvent,
    PaymentEventOut,
    SessionAvailabilityOut,
    SessionCreate,
    SessionOut,
    SessionVariantOut,
    VariantAvailabilityOut,
)
from laku.group_buying.tasks import (
    CONFIRM_RESERVATION,
    EXPIRE_PAYMENT_BY_REFERENCE,
    REFUND_LATE_PAYMENT,
    RELEASE_RESERVATION,
    SETTLE_CANCELLED_SESSION,
)
from laku.product.client import ProductClient
from laku.warehouse.client import WarehouseClient

log = structlog.get_logger()

# No 0/O or 1/I: codes are read out and typed by people.
_CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
_CODE_LENGTH = 8


SessionClosed = problem(Conflict, "session_closed", "The session no longer accepts joins")


def now() -> datetime:
    return datetime.now(UTC)


def new_session_code() -> str:
    return "GB-" + "".join(secrets.choice(_CODE_ALPHABET) for _ in range(_CODE_LENGTH))


def _columns(row: Base, wire_model: type[WireModel]) -> dict[str, Any]:
    """The row's values of the wire model's fields that are columns of the row's table."""
    table = type(row)
    return {name: getattr(row, name) for name in wire_model.model_fields if hasattr(table, name)}


def session_out(
    group: GroupBuyingSession, variants: Sequence[SessionVariant], buyers: int, at: datetime
) -> SessionOut:
    tier_price = current_unit_price(group)
    return SessionOut(
        **_columns(group, SessionOut),
        buyer_count=buyers,
        fill_basis_points=fill_basis_points(group.paid_quantity, group.target_moq),
        quantity_to_moq=max(group.target_moq - group.paid_quantity, 0),
        current_tier=tier_for(group.paid_quantity, group.target_moq),
        current_unit_price=tier_price,
        joinable=is_joinable(group, at),
        variants=[
            SessionVariantOut(**_columns(variant, SessionVariantOut), unit_price=tier_price)
            for variant in variants
        ],
    )


# The participant's columns a ParticipantOut carries (all it has but the session's code).
_PARTICIPANT_OUT_COLUMNS = [
    column for column in Participant.__table__.c if column.name in ParticipantOut.model_fields
]


def participant_out(participant: Participant, session_code: str) -> ParticipantOut:
    return ParticipantOut(**_columns(participant, ParticipantOut), session_code=session_code)


# Opening and reading -----------------------------------------------------------------------


def _check_terms(body: SessionCreate, at: datetime) -> TierPrices:
    prices = TierPrices(
        body.price_tier_25, body.price_tier_50, body.price_tier_75, body.price_tier_100
    )
    if prices.rises():
        raise InvalidInput(
            "Tier prices must not rise: priceTier25 >= priceTier50 >= priceTier75 >= priceTier100",
            code="tiers_rise",
        )
    if body.group_price is not None and body.group_price != body.price_tier_25:
        raise InvalidInput(
            "groupPrice is the opening price and must equal priceTier25",
            code="group_price_mismatch",
        )
    if body.end_time <= at:
        raise InvalidInput("endTime must be in the future", code="end_time_past")
    if body.estimated_completion_date < body.end_time:
        raise InvalidInput(
            "estimatedCompletionDate must not be before endTime", code="completion_before_end"
        )
    return prices


async def create_session(
    session: AsyncSession, products: ProductClient, body: SessionCreate, created_by: uuid.UUID
) -> SessionOut:
    """Seed step 2. The product's variants are copied into the session, so joins need no call
    to product-service; every variant is sold at the session's tier prices (design 7)."""
    at = now()
    _check_terms(body, at)
    product = found(
        await products.get_product(body.product_id),
        InvalidInput(f"No product {body.product_id}", code="unknown_product"),
    )
    if product.factory_id != body.factory_id:
        raise InvalidInput(
            f"Product {product.id} is made by factory {product.factory_id}",
            code="factory_mismatch",
        )
    if product.status == "archived":
        raise InvalidInput("The product is archived", code="product_archived")
    if not product.variants:
        raise InvalidInput("The product has no variants to join with", code="product_no_variants")
    group = GroupBuyingSession(
        id=uuid.uuid4(),
        session_code=new_session_code(),
        product_id=product.id,
        factory_id=product.factory_id,
        product_name=product.name,
        target_moq=body.target_moq,
        group_price=body.price_tier_25,
        price_tier_25=body.price_tier_25,
        price_tier_50=body.price_tier_50,
        price_tier_75=body.price_tier_75,
        price_tier_100=body.price_tier_100,
        end_time=body.end_time,
        estimated_completion_date=body.estimated_completion_date,
        status=SessionStatus.FORMING,
        paid_quantity=0,
        created_by=created_by,
    )
    variants = [
        SessionVariant(
            session_id=group.id,
            variant_id=variant.id,
            sku=variant.sku,
            variant_name=variant.variant_name,
            price_adjustment=variant.price_adjustment,
        )
        for variant in product.variants
    ]
    session.add(group)
    await session.flush()  # the session row before its variants (foreign key)
    session.add_all(variants)
    await session.commit()
    await session.refresh(group)
    return session_out(group, variants, 0, at)  # nobody has joined yet


def by_reference(session_ref: str) -> Select[tuple[GroupBuyingSession]]:
    """A session is named by its id or its code (e.g. GB-7KQ2M9XA)."""
    query = select(GroupBuyingSession)
    try:
        return query.where(GroupBuyingSession.id == uuid.UUID(session_ref))
    except ValueError:
        return query.where(GroupBuyingSession.session_code == session_ref.upper())


def session_not_found(session_ref: str) -> NotFound:
    return NotFound(f"No group-buying session {session_ref}", code="session_not_found")


async def find_session(
    session: AsyncSession, session_ref: str, *, lock: bool = False
) -> GroupBuyingSession:
    query = by_reference(session_ref)
    if lock:
        query = query.with_for_update()
    return found(
        await session.scalar(query.execution_options(populate_existing=True)),
        session_not_found(session_ref),
    )


async def session_variants(
    session: AsyncSession, session_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[SessionVariant]]:
    rows = await session.scalars(
        select(SessionVariant)
        .where(SessionVariant.session_id.in_(session_ids))
        .order_by(SessionVariant.session_id, SessionVariant.price_adjustment, SessionVariant.sku)
    )
    by_session: dict[uuid.UUID, list[SessionVariant]] = {sid: [] for sid in session_ids}
    for row in rows:
        by_session[row.session_id].append(row)
    return by_session


async def sessions_out(
    session: AsyncSession, groups: Sequence[GroupBuyingSession]
) -> list[SessionOut]:
    """The sessions as read, each with its variants and its count of paying buyers."""
    ids = [group.id for group in groups]
    variants = await session_variants(session, ids)
    buyers = dict(
        (
            await session.execute(
                select(Participant.session_id, func.count(distinct(Participant.user_id)))
                .where(Participant.session_id.in_(ids))
                .where(Participant.status == ParticipantStatus.PAID)
                .group_by(Participant.session_id)
            )
        )
        .tuples()
        .all()
    )
    at = now()
    return [session_out(g, variants[g.id], buyers.get(g.id, 0), at) for g in groups]


async def get_session(session: AsyncSession, session_ref: str) -> SessionOut:
    [found] = await sessions_out(session, [await find_session(session, session_ref)])
    return found


async def list_sessions(
    session: AsyncSession,
    statuses: Sequence[SessionStatus] | None,
    factory_id: uuid.UUID | None,
    limit: int,
    offset: int,
) -> tuple[list[SessionOut], int]:
    """Sessions in `statuses`, or those taking joins when None; of one factory when given. The
    soonest to close first."""
    at = now()
    if statuses is None:
        chosen = [GroupBuyingSession.status.in_(OPEN_STATUSES), GroupBuyingSession.end_time > at]
    else:
        chosen = [GroupBuyingSession.status.in_(statuses)]
    if factory_id is not None:
        chosen.append(GroupBuyingSession.factory_id == factory_id)
    groups, total = await page(
        session,
        select(GroupBuyingSession).where(*chosen),
        GroupBuyingSession.end_time,
        GroupBuyingSession.id,
        limit=limit,
        offset=offset,
    )
    return await sessions_out(session, groups), total


async def count_by_status(session: AsyncSession) -> dict[SessionStatus, int]:
    counted = await session.execute(
        select(GroupBuyingSession.status, func.count()).group_by(GroupBuyingSession.status)
    )
    return {status: 0 for status in SessionStatus} | dict(counted.tuples().all())


async def list_participations(
    session: AsyncSession, user_id: uuid.UUID, limit: int, offset: int
) -> tuple[list[ParticipationOut], int]:
    """A buyer's own participations, newest first."""
    total = (
        await session.scalar(
            select(func.count()).select_from(Participant).where(Participant.user_id == user_id)
        )
        or 0
    )
    rows = (
        await session.execute(
            select(Participant, GroupBuyingSession, SessionVariant.variant_name)
            .join(GroupBuyingSession, GroupBuyingSession.id == Participant.session_id)
            .join(
                SessionVariant,
                (SessionVariant.session_id == Participant.session_id)
                & (SessionVariant.variant_id == Participant.variant_id),
            )
            .where(Participant.user_id == user_id)
            .order_by(Participant.created_at.desc(), Participant.id)
            .limit(limit)
            .offset(offset)
        )
    ).all()
    return [
        ParticipationOut(
            **participant_out(participant, group.session_code).model_dump(),
            product_name=group.product_name,
            variant_name=variant_name,
            session_status=group.status,
            session_end_time=group.end_time,
        )
        for participant, group, variant_name in rows
    ], total


async def list_participants(
    session: AsyncSession,
    session_ref: str,
    status: ParticipantStatus | None,
    limit: int,
    offset: int,
) -> tuple[list[ParticipantOut], int]:
    group = await find_session(session, session_ref)
    conditions = [Participant.session_id == group.id]
    if status is not None:
        conditions.append(Participant.status == status)
    total = (
        await session.scalar(select(func.count()).select_from(Participant).where(*conditions)) or 0
    )
    # Columns, not mapped objects: a closed group's participants are read in pages of
    # thousands, and loading each as an object cost more than the query.
    rows = await session.execute(
        select(*_PARTICIPANT_OUT_COLUMNS)
        .where(*conditions)
        .order_by(Participant.created_at, Participant.id)
        .limit(limit)
        .offset(offset)
    )
    return [ParticipantOut(**row._mapping, session_code=group.session_code) for row in rows], total


async def variant_availability(
    session: AsyncSession, warehouse: WarehouseClient, session_ref: str
) -> SessionAvailabilityOut:
    """Each variant's available stock and status as the warehouse has them, its price now, and
    whether it can be joined. A variant never stocked is out of stock."""
    group = await find_session(session, session_ref)
    variants = (await session_variants(session, [group.id]))[group.id]
    await session.commit()  # no connection held while warehouse-service answers
    stock = await warehouse.product_stock(group.product_id)
    inventory = {item.variant_id: item for item in (stock.variants if stock else [])}
    joinable = is_joinable(group, now())
    availability = []
    for variant in variants:
        item = inventory.get(variant.variant_id)
        available = max(item.available_quantity, 0) if item else 0
        availability.append(
            VariantAvailabilityOut(
                **_columns(variant, VariantAvailabilityOut),
                available_quantity=available,
                status=AvailabilityStatus(item.status) if item else AvailabilityStatus.OUT_OF_STOCK,
                can_join=joinable and available > 0,
                unit_price=current_unit_price(group),
            )
        )
    return SessionAvailabilityOut(
        session_id=group.id,
        session_code=group.session_code,
        joinable=joinable,
        variants=availability,
    )


# Payment events ----------------------------------------------------------------------------


async def _release_later(session: AsyncSession, participant: Participant) -> None:
    await enqueue(
        session, outbox, RELEASE_RESERVATION, {"reference": participant.reservation_reference}
    )


async def apply_payment_event(session: AsyncSession, event: PaymentEvent) -> PaymentEventOut:
    """What payment-service reports. Each participant moves at most once per kind of event, so
    repeated or late events (EXPIRED after PAID, PAID twice) change nothing."""
    participant = await _locked_participant(session, event.reference)
    applied = participant is not None and await _apply(session, participant, event)
    await session.commit()  # also ends the locks of an event that changed nothing
    return PaymentEventOut(
        reference=event.reference,
        outcome="unknown" if participant is None else "applied" if applied else "ignored",
        participant_status=participant.status if participant else None,
    )


async def _locked_participant(session: AsyncSession, reference: str) -> Participant | None:
    """The participant `reference` names, locked after its session row (whose paid quantity
    a payment changes)."""
    participant_id = participant_named(reference)
    if participant_id is None:
        log.warning("payment_event_for_unknown_reference", reference=reference)
        return None
    session_id = await session.scalar(
        select(Participant.session_id).where(Participant.id == participant_id)
    )
    if session_id is None:
        log.warning("payment_event_for_unknown_participant", reference=reference)
        return None
    await session.execute(
        select(GroupBuyingSession.id).where(GroupBuyingSession.id == session_id).with_for_update()
    )
    return await session.scalar(
        select(Participant)
        .where(Participant.id == participant_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )


async def _apply(session: AsyncSession, participant: Participant, event: PaymentEvent) -> bool:
    """Whether the event changed the participant (its session row is locked by the caller)."""
    if participant.payment_id not in (None, event.payment_id):
        log.warning(
            "payment_event_for_another_payment",
            reference=event.reference,
            payment_id=str(event.payment_id),
        )
        return False
    pending = participant.status == ParticipantStatus.PENDING_PAYMENT
    if event.status is PaymentEventStatus.PAID:
        if pending:
            participant.status = ParticipantStatus.PAID
            group = await session.get_one(GroupBuyingSession, participant.session_id)
            group.paid_quantity += participant.quantity
            group.status = status_after_payment(
                SessionStatus(group.status), group.paid_quantity, group.target_moq
            )
            # Its stock is held no longer than its invoice: paid, the hold must not lapse.
            await enqueue(
                session,
                outbox,
                CONFIRM_RESERVATION,
                {"participantId": str(participant.id)},
            )
            await notify_later(session, paid_notice(participant, group))
        elif participant.status == ParticipantStatus.CANCELLED and participant.paid_at is None:
            # Paid just as it was cancelled: recorded, and the money given back in full.
            log.warning("payment_after_cancellation", reference=event.reference)
            await enqueue(
                session, outbox, REFUND_LATE_PAYMENT, {"participantId": str(participant.id)}
            )
        else:
            return False
        participant.paid_at = event.occurred_at
    elif pending:
        reason = (
            CancelReason.PAYMENT_EXPIRED
            if event.status is PaymentEventStatus.EXPIRED
            else CancelReason.PAYMENT_FAILED
        )
        participant.cancel(reason, now())
        await _release_later(session, participant)
    else:
        return False
    participant.payment_id = event.payment_id
    return True


async def give_up_later(session: AsyncSession, participant: Participant) -> None:
    """What a join given up leaves to other services, through the outbox: its invoice expired
    (or voided if it was never made) and its stock released."""
    await enqueue(
        session,
        outbox,
        EXPIRE_PAYMENT_BY_REFERENCE,
        {"reference": participant.reservation_reference},
    )
    await _release_later(session, participant)


# Cancelling --------------------------------------------------------------------------------


async def cancel_session(session: AsyncSession, session_ref: str) -> SessionOut:
    """An admin calls the session off: every participant is cancelled, then, through the
    outbox in a few batched calls, the unpaid invoices are expired, the session's stock
    released, the paid refunded in full and every buyer told. Cancelling again changes
    nothing; a session whose close has begun cannot be cancelled."""
    group = await find_session(session, session_ref, lock=True)
    if group.status != SessionStatus.CANCELLED:
        if group.status not in OPEN_STATUSES or group.close_step is not None:
            state = "closing" if group.status in OPEN_STATUSES else group.status
            raise Conflict(
                f"A session that is {state} cannot be cancelled", code="session_not_cancellable"
            )
        at = now()
        group.status = SessionStatus.CANCELLED
        group.cancelled_at = at
        # The paid keep their `paid_at`: they are owed their money back.
        await session.execute(
            update(Participant)
            .where(
                Participant.session_id == group.id,
                Participant.status.in_([ParticipantStatus.PENDING_PAYMENT, ParticipantStatus.PAID]),
            )
            .values(
                status=ParticipantStatus.CANCELLED,
                cancelled_at=at,
                cancel_reason=CancelReason.SESSION_CANCELLED,
            )
        )
        await enqueue(session, outbox, SETTLE_CANCELLED_SESSION, {"sessionId": str(group.id)})
        await notify_outcome_later(session, group.id)
        await session.commit()
    [cancelled] = await sessions_out(session, [group])
    return cancelled
