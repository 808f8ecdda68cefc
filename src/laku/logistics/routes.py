import uuid
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Path, Query, Request, Response, status
from sqlalchemy.ext.asyncio import AsyncSession

from laku.core.app import DbSession
from laku.core.errors import PROBLEM_RESPONSES
from laku.core.routing import created_status, from_attributes, post_once
from laku.core.schemas import Page, Paging, SingleLine
from laku.core.security import (
    AdminPrincipal,
    BuyerOrAdmin,
    Principal,
    require_service_callers,
)
from laku.logistics import shipments, tracking
from laku.logistics.models import Shipment
from laku.logistics.rates import quote
from laku.logistics.schemas import (
    BiteshipWebhook,
    BulkShipmentsCreate,
    BulkShipmentsOut,
    RatesOut,
    RatesRequest,
    ShipmentCreate,
    ShipmentDetailOut,
    ShipmentOut,
    TrackingEventOut,
    WebhookAck,
)
from laku.providers.biteship.client import WEBHOOK_SECRET_HEADER, verify_webhook_secret
from laku.providers.webhooks import provider_webhook

router = APIRouter(prefix="/api", tags=["logistics"], responses=PROBLEM_RESPONSES)

# Warehouse-service books a whole session's parcels when it dispatches.
SessionBooker = Annotated[Principal, Depends(require_service_callers("warehouse"))]


def _shipments(request: Request) -> shipments.Shipments:
    return request.app.state.shipments


def _tracking(request: Request) -> tracking.Tracking:
    return request.app.state.tracking


# Biteship's webhooks carry the header and secret set in its dashboard.
_biteship_webhook = provider_webhook(
    WEBHOOK_SECRET_HEADER, verify_webhook_secret, "invalid_webhook_secret"
)


async def _detail(session: AsyncSession, shipment: Shipment) -> ShipmentDetailOut:
    events = await tracking.events_of(session, shipment.id)
    events_out = [TrackingEventOut.model_validate(event) for event in events]
    return from_attributes(ShipmentDetailOut, shipment, events=events_out)


@router.post(
    "/rates",
    response_model=RatesOut,
    responses={503: {"description": "order-service, address-service or Biteship is unavailable"}},
)
async def rates(body: RatesRequest, principal: BuyerOrAdmin, request: Request) -> RatesOut:
    """Seed step 9.1: each courier's price for the order's parcel, from the warehouse to the
    buyer's address (`addressId`, else their default). A buyer asks for their own orders only;
    postal codes sent that differ from the server's are refused (409 `postal_code_mismatch`)."""
    return await quote(request.app.state.shipping, principal, body)


@post_once(
    router,
    "/shipments",
    ShipmentDetailOut,
    "The order's shipment, booked before",
    {503: {"description": "Biteship or a service is unavailable; retrying is safe"}},
)
async def create_shipment(
    body: ShipmentCreate,
    _: AdminPrincipal,
    request: Request,
    response: Response,
    session: DbSession,
) -> ShipmentDetailOut:
    """Seed step 9.2: book the courier with Biteship for a `processing` order (409
    `order_not_shippable` otherwise) whose goods are in hand (409 `order_not_ready` before);
    `trackingNumber` is the courier's waybill. An order has one shipment: asking again answers
    it (200) and books nothing twice."""
    booked = await _shipments(request).create_shipment(body)
    response.status_code = created_status(booked.created)
    # Read afresh: the booking's own session is gone, with the columns the database set.
    return await _detail(session, await session.get_one(Shipment, booked.shipment.id))


@router.post(
    "/shipments/bulk",
    response_model=BulkShipmentsOut,
    status_code=status.HTTP_201_CREATED,
    responses={
        409: {"description": "Some of its orders are being booked by another call; retry"},
        503: {"description": "Biteship or a service is unavailable; retrying is safe"},
    },
)
async def create_shipments_in_bulk(
    body: BulkShipmentsCreate, _: SessionBooker, request: Request
) -> BulkShipmentsOut:
    """Warehouse asks, once a group buy's goods are in hand (seed step 8 -> 9): book every
    ready order of the group buy that has no shipment. Orders of one buyer's address with one
    courier go as one parcel; the courier is the one the buyer chose on the order, else the
    cheapest service of `LAKU_SHIPPING_COURIERS`. Calling again books nothing twice."""
    return await _shipments(request).book_session(body.group_session_id)


@router.post(
    "/shipments/webhook",
    response_model=WebhookAck,
    dependencies=[Depends(_biteship_webhook)],
    responses={200: {"description": "Applied, a duplicate, or acknowledged and ignored"}},
)
async def biteship_webhook(
    request: Request, webhook: Annotated[BiteshipWebhook | None, Body()] = None
) -> WebhookAck:
    """Biteship's `order.status` webhook: the tracking event is recorded once, the shipment
    takes the status, and the order follows (`picked` -> shipped, `delivered` -> delivered).
    Authenticated by the `X-Biteship-Signature` secret, not a bearer token."""
    if webhook is None:  # Biteship's check when the URL is saved
        return WebhookAck(status="ignored")
    return WebhookAck(status=await _tracking(request).apply_webhook(webhook))


@router.get("/shipments", response_model=Page[ShipmentOut])
async def list_shipments(
    principal: BuyerOrAdmin,
    session: DbSession,
    paging: Paging,
    order_id: Annotated[uuid.UUID | None, Query(alias="orderId")] = None,
) -> Page[ShipmentOut]:
    """Newest first. A buyer sees only their own shipments."""
    return await Page.read(
        paging, ShipmentOut, shipments.list_shipments, session, principal, order_id=order_id
    )


@router.get("/shipments/track/{tracking_number}", response_model=ShipmentDetailOut)
async def track(
    tracking_number: Annotated[str, Path(max_length=64), SingleLine],
    principal: BuyerOrAdmin,
    session: DbSession,
) -> ShipmentDetailOut:
    """Seed step 9.3: the shipment with the waybill and what Biteship reported. Its buyer,
    admins and services; to another buyer it does not exist."""
    return await _detail(session, await tracking.track(session, tracking_number, principal))


@router.get("/shipments/{shipment_id}", response_model=ShipmentDetailOut)
async def get_shipment(
    shipment_id: uuid.UUID, principal: BuyerOrAdmin, session: DbSession
) -> ShipmentDetailOut:
    return await _detail(session, await shipments.get_shipment(session, shipment_id, principal))
