"""Orders: created in bulk for the paid participants of a successful group buy (seed step 6),
read by their buyers and the platform, and moved through their lifecycle:

    processing -> shipped -> delivered          (logistics-service, from the courier's webhook)
    ready to ship (a mark on a processing order) (warehouse, once the group's goods are in hand)
    processing -> cancelled -> refunded          (an admin; the subtotal back to the wallet)

Every move locks the order's row, checks the move is allowed from the status it finds, and
commits; asking for a move already made answers the order as it is, so retries are safe. A
move from any other status is refused with 409 `invalid_order_transition` and changes nothing.

A participant has at most one order (`participant_id` is unique) and a session's orders are
inserted with ON CONFLICT DO NOTHING in one transaction, so calling bulk again, or twice at the
same moment, creates each order once. However many participants, the bulk costs one call to
group-buying, one to product-service and a few batched INSERTs.
"""

import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from sqlalchemy import (
    BigInteger,
    Select,
    Text,
    Uuid,
    cast,
    func,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from laku.core.db import array_rows
from laku.core.errors import Conflict, NotFound
from laku.core.outbox import enqueue
from laku.core.problems import problem
from laku.core.rows import found, page
from laku.core.security import Principal
from laku.group_buying.client import (
    GroupBuyingClient,
    ParticipantOut,
    ParticipantStatus,
    SessionStatus,
)
from laku.order.models import Order, OrderItem, outbox
from laku.order.rules import CANCELLABLE_STATUSES, BuyerEvent, OrderStatus
from laku.order.schemas import BulkOrdersOut, CourierChoice, ProductSnapshot, SessionReadyOut
from laku.order.tasks import REFUND_CANCELLED_ORDER, TELL_BUYER
from laku.product.client import ProductClient, ProductDetailOut

# A session's orders are made once it has reached its MOQ: while it closes (moq_reached, the
# status group-buying calls bulk in), waits for stock, or has succeeded.
SUCCESSFUL_SESSION_STATUSES = frozenset(
    {
        SessionStatus.MOQ_REACHED,
        SessionStatus.PENDING_STOCK,
        SessionStatus.STOCK_RECEIVED,
        SessionStatus.SUCCESS,
    }
)

_orders = Order.__table__
_items = OrderItem.__table__


InvalidOrderTransition = problem(
    Conflict, "invalid_order_transition", "The order cannot make that move from its status"
)
SessionNotFound = problem(NotFound, "session_not_found", "No such group-buying session")
SessionNotSuccessful = problem(
    Conflict, "session_not_successful", "The group-buying session has not succeeded"
)


@dataclass(frozen=True)
class SessionSummary:
    orders: int
    units: int
    subtotal: int
    by_status: dict[OrderStatus, int]


def _order_not_found() -> NotFound:
    return NotFound("No such order", code="order_not_found")


def final_unit_price(participant: ParticipantOut) -> int:
    """The price after the group's final tier when group-buying has set it, else what was paid."""
    if participant.final_unit_price is not None:
        return participant.final_unit_price
    return participant.unit_price


def variant_snapshots(product: ProductDetailOut) -> dict[uuid.UUID, ProductSnapshot]:
    first_image = min(product.images, key=lambda image: image.sort_order, default=None)
    return {
        variant.id: ProductSnapshot(
            sku=product.sku,
            name=product.name,
            factory_id=product.factory_id,
            variant_id=variant.id,
            variant_sku=variant.sku,
            variant_name=variant.variant_name,
            image_url=first_image.url if first_image else None,
        )
        for variant in product.variants
    }


async def create_bulk(
    session: AsyncSession,
    group_buying: GroupBuyingClient,
    products: ProductClient,
    group_session_id: uuid.UUID,
) -> BulkOrdersOut:
    group = found(
        await group_buying.get_session(group_session_id),
        SessionNotFound(f"No group-buying session {group_session_id}"),
    )
    if group.status not in SUCCESSFUL_SESSION_STATUSES:
        raise SessionNotSuccessful(
            f"Session {group.session_code} is {group.status}; orders are made once it succeeds"
        )
    participants = await group_buying.list_participants(group.id, status=ParticipantStatus.PAID)
    product = await products.get_product(group.product_id)
    if product is None:
        raise Conflict(f"Product {group.product_id} is unknown", code="unknown_product")
    created = await insert_orders(session, group.id, product, participants)
    return BulkOrdersOut(
        group_session_id=group.id,
        created=created,
        existing=len(participants) - created,
        total=len(participants),
    )


async def insert_orders(
    session: AsyncSession,
    group_session_id: uuid.UUID,
    product: ProductDetailOut,
    participants: Sequence[ParticipantOut],
) -> int:
    """Insert the orders (and their one item) that do not exist yet; returns how many.

    Two statements however many participants, their columns sent as arrays (one parameter
    each): the orders, with their variant's snapshot joined in by the database, and the items
    of the orders that insert made."""
    snapshots = variant_snapshots(product)
    for participant in participants:
        if participant.variant_id not in snapshots:
            raise Conflict(
                f"Variant {participant.variant_id} is not a variant of product {product.id}",
                code="unknown_variant",
            )
        if participant.payment_id is None:
            raise Conflict(
                f"Paid participant {participant.id} has no payment",
                code="participant_without_payment",
            )
    if not participants:
        return 0
    # The same order in every call: two concurrent calls then meet at their first row, and the
    # second waits for the first to commit instead of the two deadlocking.
    ordered = sorted(participants, key=lambda p: p.id)
    order_ids = {p.id: uuid.uuid4() for p in ordered}
    paid = array_rows(
        ("participant_id", Uuid(), [p.id for p in ordered]),
        ("order_id", Uuid(), list(order_ids.values())),
        ("user_id", Uuid(), [p.user_id for p in ordered]),
        ("payment_id", Uuid(), [p.payment_id for p in ordered]),
        ("variant_id", Uuid(), [p.variant_id for p in ordered]),
        ("subtotal", BigInteger(), [p.quantity * final_unit_price(p) for p in ordered]),
    )
    snapshot_of = array_rows(
        ("variant_id", Uuid(), list(snapshots)),
        ("snapshot", Text(), [snapshot.model_dump_json() for snapshot in snapshots.values()]),
    )
    inserted = await session.scalars(
        pg_insert(_orders)
        .from_select(
            [
                "id",
                "group_session_id",
                "participant_id",
                "user_id",
                "payment_id",
                "product_id",
                "product_snapshot",
                "status",
                "subtotal",
            ],
            select(
                paid.c.order_id,
                literal(group_session_id, Uuid()),
                paid.c.participant_id,
                paid.c.user_id,
                paid.c.payment_id,
                literal(product.id, Uuid()),
                cast(snapshot_of.c.snapshot, JSONB),
                literal(OrderStatus.PROCESSING.value),
                paid.c.subtotal,
            )
            .join_from(paid, snapshot_of, paid.c.variant_id == snapshot_of.c.variant_id)
            .order_by(paid.c.participant_id),
        )
        .on_conflict_do_nothing(index_elements=[_orders.c.participant_id])
        .returning(_orders.c.participant_id)
    )
    # Only the orders inserted now get their item: a participant's existing order has its own.
    new = set(inserted.all())
    if new:
        fresh = [p for p in ordered if p.id in new]
        await session.execute(
            insert(_items).from_select(
                [
                    "id",
                    "order_id",
                    "variant_id",
                    "sku",
                    "name",
                    "quantity",
                    "unit_price",
                    "total_price",
                ],
                select(
                    array_rows(
                        ("id", Uuid(), [uuid.uuid4() for _ in fresh]),
                        ("order_id", Uuid(), [order_ids[p.id] for p in fresh]),
                        ("variant_id", Uuid(), [p.variant_id for p in fresh]),
                        ("sku", Text(), [snapshots[p.variant_id].variant_sku for p in fresh]),
                        (
                            "name",
                            Text(),
                            [_item_name(product, snapshots[p.variant_id]) for p in fresh],
                        ),
                        ("quantity", BigInteger(), [p.quantity for p in fresh]),
                        ("unit_price", BigInteger(), [final_unit_price(p) for p in fresh]),
                        (
                            "total_price",
                            BigInteger(),
                            [p.quantity * final_unit_price(p) for p in fresh],
                        ),
                    )
                ),
            )
        )
    await session.commit()
    return len(new)


def _item_name(product: ProductDetailOut, snapshot: ProductSnapshot) -> str:
    return f"{product.name} ({snapshot.variant_name})"


async def get_order(session: AsyncSession, order_id: uuid.UUID, principal: Principal) -> Order:
    """The buyer who placed it, admins and services; to anyone else it does not exist."""
    order = await session.get(Order, order_id)
    if order is None or (not principal.is_privileged and order.user_id != principal.user_id):
        raise _order_not_found()
    return order


async def list_orders(
    session: AsyncSession,
    *,
    user_id: uuid.UUID | None,
    group_session_id: uuid.UUID | None,
    status: OrderStatus | None,
    limit: int,
    offset: int,
) -> tuple[Sequence[Order], int]:
    """Newest first."""
    query: Select[tuple[Order]] = select(Order)
    if user_id is not None:
        query = query.where(Order.user_id == user_id)
    if group_session_id is not None:
        query = query.where(Order.group_session_id == group_session_id)
    if status is not None:
        query = query.where(Order.status == status.value)
    return await page(session, query, Order.created_at.desc(), Order.id, limit=limit, offset=offset)


async def session_summary(session: AsyncSession, group_session_id: uuid.UUID) -> SessionSummary:
    """Orders per status and their units; a session without orders has zeros."""
    units_per_order = (
        select(OrderItem.order_id, func.sum(OrderItem.quantity).cast(BigInteger).label("units"))
        .group_by(OrderItem.order_id)
        .subquery()
    )
    rows = await session.execute(
        select(
            Order.status,
            func.count(),
            # sum() of BIGINT is NUMERIC in PostgreSQL: cast back to whole numbers.
            func.coalesce(func.sum(units_per_order.c.units), 0).cast(BigInteger),
            func.coalesce(func.sum(Order.subtotal), 0).cast(BigInteger),
        )
        .outerjoin(units_per_order, units_per_order.c.order_id == Order.id)
        .where(Order.group_session_id == group_session_id)
        .group_by(Order.status)
    )
    by_status = dict.fromkeys(OrderStatus, 0)
    units = subtotal = 0
    for status, count, status_units, status_subtotal in rows:
        by_status[OrderStatus(status)] = count
        units += status_units
        subtotal += status_subtotal
    return SessionSummary(
        orders=sum(by_status.values()), units=units, subtotal=subtotal, by_status=by_status
    )


# Lifecycle -----------------------------------------------------------------------------------


async def _locked_order(session: AsyncSession, order_id: uuid.UUID) -> Order:
    return found(
        await session.scalar(
            select(Order)
            .where(Order.id == order_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        ),
        _order_not_found(),
    )


def _require_status(order: Order, allowed: Collection[OrderStatus], rule: str) -> None:
    """Refuses a move that `order`'s status does not allow, naming the `rule` it breaks."""
    if order.status not in allowed:
        raise InvalidOrderTransition(f"Order {order.order_number} is {order.status}; {rule}")


async def _saved(session: AsyncSession, order: Order) -> Order:
    await session.commit()
    await session.refresh(order)  # server-set timestamps as stored
    return order


async def ship(
    session: AsyncSession, order_id: uuid.UUID, *, tracking_number: str, courier: str
) -> Order:
    """processing -> shipped with the courier's waybill. The same waybill again answers the
    order as it is (a webhook delivered twice); another waybill is refused."""
    order = await _locked_order(session, order_id)
    if order.status in (OrderStatus.SHIPPED, OrderStatus.DELIVERED) and (
        order.tracking_number == tracking_number
    ):
        await session.commit()
        return order
    _require_status(order, {OrderStatus.PROCESSING}, "only a processing order is shipped")
    order.status = OrderStatus.SHIPPED.value
    order.tracking_number = tracking_number
    order.courier = courier
    order.shipped_at = func.now()
    await _tell_buyer(session, order, BuyerEvent.SHIPPED)
    return await _saved(session, order)


async def deliver(session: AsyncSession, order_id: uuid.UUID) -> Order:
    """shipped -> delivered; delivering a delivered order answers it as it is."""
    order = await _locked_order(session, order_id)
    if order.status == OrderStatus.DELIVERED:
        await session.commit()
        return order
    _require_status(order, {OrderStatus.SHIPPED}, "only a shipped order is delivered")
    order.status = OrderStatus.DELIVERED.value
    order.delivered_at = func.now()
    await _tell_buyer(session, order, BuyerEvent.DELIVERED)
    return await _saved(session, order)


async def _tell_buyer(session: AsyncSession, order: Order, event: BuyerEvent) -> None:
    await enqueue(session, outbox, TELL_BUYER, {"orderId": str(order.id), "event": event.value})


async def mark_session_ready(session: AsyncSession, group_session_id: uuid.UUID) -> SessionReadyOut:
    """The group buy's goods are in hand: its processing orders become ready to ship, and
    each buyer is told (with the mark, in one transaction). Marking again marks nothing."""
    marked = (
        await session.scalars(
            update(Order)
            .where(
                Order.group_session_id == group_session_id,
                Order.status == OrderStatus.PROCESSING.value,
                Order.ready_to_ship_at.is_(None),
            )
            .values(ready_to_ship_at=func.now())
            .returning(Order.id)
        )
    ).all()
    if marked:
        await session.execute(
            insert(outbox),
            [
                {
                    "kind": TELL_BUYER,
                    "payload": {"orderId": str(order_id), "event": BuyerEvent.READY_TO_SHIP.value},
                }
                for order_id in marked
            ],
        )
    ready = await session.scalar(
        select(func.count()).where(
            Order.group_session_id == group_session_id,
            Order.status == OrderStatus.PROCESSING.value,
            Order.ready_to_ship_at.is_not(None),
        )
    )
    await session.commit()
    return SessionReadyOut(group_session_id=group_session_id, marked=len(marked), ready=ready or 0)


async def choose_courier(
    session: AsyncSession, order_id: uuid.UUID, principal: Principal, choice: CourierChoice
) -> Order:
    """The buyer's courier for the parcel, while the order has not shipped; the booking takes
    it if it comes after."""
    order = await get_order(session, order_id, principal)
    order = await _locked_order(session, order.id)
    _require_status(order, {OrderStatus.PROCESSING}, "a courier is chosen before it ships")
    order.chosen_courier_company = choice.courier_company
    order.chosen_courier_type = choice.courier_type
    return await _saved(session, order)


async def cancel(session: AsyncSession, order_id: uuid.UUID, reason: str) -> Order:
    """Call an order off before the courier has it; its subtotal is refunded to the buyer's
    wallet through the outbox, after which it is `refunded`. Cancelling a cancelled (or
    refunded) order answers it as it is."""
    order = await _locked_order(session, order_id)
    if order.status in (OrderStatus.CANCELLED, OrderStatus.REFUNDED):
        await session.commit()
        return order
    _require_status(order, CANCELLABLE_STATUSES, "an order is cancelled only before it ships")
    order.status = OrderStatus.CANCELLED.value
    order.cancelled_at = func.now()
    order.cancel_reason = reason
    await enqueue(session, outbox, REFUND_CANCELLED_ORDER, {"orderId": str(order.id)})
    return await _saved(session, order)
