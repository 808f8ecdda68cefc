import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, status

from laku.core.app import DbSession
from laku.core.errors import PROBLEM_RESPONSES
from laku.core.routing import OutboxSession, StatusFilter, UserFilter, from_attributes
from laku.core.schemas import Page, Paging
from laku.core.security import AdminPrincipal, BuyerOrAdmin, Principal, Role, require_roles
from laku.order import service
from laku.order.rules import OrderStatus
from laku.order.schemas import (
    BulkOrdersCreate,
    BulkOrdersOut,
    CourierChoice,
    OrderCancel,
    OrderOut,
    OrderShip,
    SessionOrdersSummaryOut,
    SessionReadyOut,
)

router = APIRouter(prefix="/api/orders", tags=["order"], responses=PROBLEM_RESPONSES)

# Orders are made by the platform (group-buying when a session closes, or an admin).
# Internal callers, by the service whose client calls the operation.
OrderCreator = Annotated[Principal, Depends(require_roles(Role.ADMIN, services=["group-buying"]))]
OrderReader = Annotated[
    Principal, Depends(require_roles(Role.BUYER, Role.ADMIN, services=["logistics"]))
]
OrderShipper = Annotated[Principal, Depends(require_roles(Role.ADMIN, services=["logistics"]))]
ReadyToShipMarker = Annotated[Principal, Depends(require_roles(Role.ADMIN, services=["warehouse"]))]


@router.post(
    "/bulk",
    response_model=BulkOrdersOut,
    status_code=status.HTTP_201_CREATED,
    responses={503: {"description": "group-buying or product-service is unavailable"}},
)
async def create_bulk(
    body: BulkOrdersCreate, request: Request, _: OrderCreator, session: DbSession
) -> BulkOrdersOut:
    """Seed step 6: an order for each paid participant of a successful session, with the
    product's snapshot, one item at the final unit price, the link to its payment and status
    `processing`. Participants that have their order already are counted in `existing`, so
    calling again (or twice at once) creates nothing twice."""
    state = request.app.state
    return await service.create_bulk(
        session, state.group_buying, state.products, body.group_session_id
    )


@router.get("", response_model=Page[OrderOut])
async def list_orders(
    principal: OrderReader,
    session: DbSession,
    paging: Paging,
    group_session_id: Annotated[uuid.UUID | None, Query(alias="sessionId")] = None,
    order_status: StatusFilter[OrderStatus] = None,
    user_id: UserFilter = None,
) -> Page[OrderOut]:
    """Newest first. A buyer sees only their own orders; admins and services see all."""
    user_id = principal.listed_user(user_id, "orders")
    return await Page.read(
        paging,
        OrderOut,
        service.list_orders,
        session,
        user_id=user_id,
        group_session_id=group_session_id,
        status=order_status,
    )


@router.get("/by-session/{group_session_id}/summary", response_model=SessionOrdersSummaryOut)
async def session_summary(
    group_session_id: uuid.UUID, _: AdminPrincipal, session: DbSession
) -> SessionOrdersSummaryOut:
    """A session's orders per status and their units; zeros before any order is made."""
    summary = await service.session_summary(session, group_session_id)
    return from_attributes(SessionOrdersSummaryOut, summary, group_session_id=group_session_id)


@router.post("/by-session/{group_session_id}/ready-to-ship", response_model=SessionReadyOut)
async def mark_session_ready(
    group_session_id: uuid.UUID, _: ReadyToShipMarker, session: OutboxSession
) -> SessionReadyOut:
    """Seed step 8, "orders become ready for shipping": the group buy's goods are in hand
    (warehouse reports it), so its processing orders may now be booked with a courier. Each
    buyer is told. Calling again marks nothing twice."""
    return await service.mark_session_ready(session, group_session_id)


@router.put("/{order_id}/courier", response_model=OrderOut)
async def choose_courier(
    order_id: uuid.UUID, body: CourierChoice, principal: BuyerOrAdmin, session: DbSession
) -> OrderOut:
    """The buyer picks the courier service their parcel is booked with (one of the rates'
    `courierCompany`/`courierType`); without a choice the cheapest is booked. Only before the
    order ships: 409 `invalid_order_transition` after."""
    return OrderOut.model_validate(await service.choose_courier(session, order_id, principal, body))


@router.get("/{order_id}", response_model=OrderOut)
async def get_order(order_id: uuid.UUID, principal: OrderReader, session: DbSession) -> OrderOut:
    """The buyer who placed it, admins and services; to another buyer it does not exist."""
    return OrderOut.model_validate(await service.get_order(session, order_id, principal))


# Lifecycle: each move answers the order as it is when it was made already, and 409
# `invalid_order_transition` from any status it cannot be made from.


@router.post("/{order_id}/ship", response_model=OrderOut)
async def ship_order(
    order_id: uuid.UUID, body: OrderShip, _: OrderShipper, session: OutboxSession
) -> OrderOut:
    """processing -> shipped: the courier has the parcel (logistics-service reports it). The
    buyer is told."""
    order = await service.ship(
        session, order_id, tracking_number=body.tracking_number, courier=body.courier
    )
    return OrderOut.model_validate(order)


@router.post("/{order_id}/deliver", response_model=OrderOut)
async def deliver_order(order_id: uuid.UUID, _: OrderShipper, session: OutboxSession) -> OrderOut:
    """shipped -> delivered; an order that has not shipped cannot be delivered. The buyer is
    told."""
    return OrderOut.model_validate(await service.deliver(session, order_id))


@router.post("/{order_id}/cancel", response_model=OrderOut)
async def cancel_order(
    order_id: uuid.UUID, body: OrderCancel, _: AdminPrincipal, session: OutboxSession
) -> OrderOut:
    """Before it ships, an admin may call an order off: `cancelled`, its subtotal refunded to
    the buyer's wallet shortly after, then `refunded`."""
    return OrderOut.model_validate(await service.cancel(session, order_id, body.reason))
