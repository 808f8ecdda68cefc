import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, status
from pydantic import AwareDatetime

from laku.core.app import DbSession
from laku.core.audit import AUDIT_PAGE_SIZE, PageSize
from laku.core.audit_admin import add_invariants
from laku.core.errors import PROBLEM_RESPONSES, problem_doc
from laku.core.rate_limit import RATE_LIMITED_RESPONSES, client_address
from laku.core.routing import NO_CONTENT, FactoryFilter, OutboxSession, StatusFilter, app_state
from laku.core.schemas import LongPaging, Offset, Page, PageWindow, Paging
from laku.core.security import (
    USER_ROLES,
    AdminPrincipal,
    Auditor,
    BuyerPrincipal,
    Principal,
    Role,
    public,
    require_roles,
    require_service_callers,
)
from laku.group_buying import audit, bundles, sessions
from laku.group_buying.closing import Closer
from laku.group_buying.join import JoinSaga
from laku.group_buying.rules import ParticipantStatus, SessionStatus
from laku.group_buying.schemas import (
    MAX_PARTICIPANTS_PAGE,
    AuditParticipantOut,
    BundleCompositionCreate,
    BundleCompositionOut,
    BundleCompositionReplace,
    JoinOut,
    JoinRequest,
    ParticipantOut,
    ParticipationOut,
    PaymentEvent,
    PaymentEventOut,
    ProcessExpiredOut,
    SessionAvailabilityOut,
    SessionCreate,
    SessionOut,
)
from laku.product.client import ProductClient
from laku.warehouse.client import WarehouseClient

router = APIRouter(tags=["group_buying"], responses=PROBLEM_RESPONSES)

# Internal callers, by the service whose client calls the operation.
BundleReader = Annotated[Principal, Depends(require_roles(*USER_ROLES, services=["warehouse"]))]
PaymentReporter = Annotated[Principal, Depends(require_service_callers("payment"))]
AdminOrOrder = Annotated[Principal, Depends(require_roles(Role.ADMIN, services=["order"]))]
AdminOrWarehouse = Annotated[Principal, Depends(require_roles(Role.ADMIN, services=["warehouse"]))]


Products = Annotated[ProductClient, Depends(app_state("product_client"))]
SessionRef = Annotated[
    str,
    Path(
        max_length=64,
        pattern=r"^[A-Za-z0-9-]+$",
        description="The session's id, or its code (e.g. GB-7KQ2M9XA)",
    ),
]
Warehouse = Annotated[WarehouseClient, Depends(app_state("warehouse"))]
Saga = Annotated[JoinSaga, Depends(app_state("join_saga"))]
SessionCloser = Annotated[Closer, Depends(app_state("closer"))]


def _participants_window(
    limit: Annotated[int, Query(ge=1, le=MAX_PARTICIPANTS_PAGE)] = 50, offset: Offset = 0
) -> PageWindow:
    return PageWindow(limit, offset)


# Services read a whole session's participants (order-service: a closed group's orders), so
# their pages may be longer than `Paging`'s.
ParticipantsPaging = Annotated[PageWindow, Depends(_participants_window)]


# Bundle composition ------------------------------------------------------------------------


@router.post(
    "/api/admin/bundle-composition",
    response_model=BundleCompositionOut,
    status_code=status.HTTP_201_CREATED,
)
async def set_bundle_composition(
    body: BundleCompositionCreate, _: AdminPrincipal, session: DbSession, products: Products
):
    """Set a product's whole bundle composition (seed step 1.3); variants not listed leave it."""
    return await bundles.set_composition(session, products, body.root)


@router.get("/api/bundle-composition/{product_id}", response_model=BundleCompositionOut)
async def get_bundle_composition(product_id: uuid.UUID, _: BundleReader, session: DbSession):
    return await bundles.get_composition(session, product_id)


@router.put("/api/admin/bundle-composition/{product_id}", response_model=BundleCompositionOut)
async def replace_bundle_composition(
    product_id: uuid.UUID,
    body: BundleCompositionReplace,
    _: AdminPrincipal,
    session: DbSession,
    products: Products,
):
    """Set the product's whole bundle composition, whether or not it had one."""
    return await bundles.replace_composition(session, products, product_id, body.root)


@router.delete("/api/admin/bundle-composition/{product_id}", **NO_CONTENT)
async def delete_bundle_composition(
    product_id: uuid.UUID, _: AdminPrincipal, session: DbSession
) -> None:
    await bundles.delete_composition(session, product_id)


# Sessions: static paths before /{session_ref} ----------------------------------------------


@router.post("/api/group-buying", response_model=SessionOut, status_code=status.HTTP_201_CREATED)
async def create_session(
    body: SessionCreate, principal: AdminPrincipal, session: DbSession, products: Products
) -> SessionOut:
    """Seed step 2: open a group buy of one product with its MOQ, tier prices and end time."""
    return await sessions.create_session(session, products, body, principal.user_id)


@router.get("/api/group-buying", response_model=Page[SessionOut], dependencies=[Depends(public)])
async def list_sessions(
    session: DbSession,
    paging: Paging,
    status_filter: Annotated[
        list[SessionStatus] | None,
        Query(alias="status", max_length=len(SessionStatus), description="Any of; open if none"),
    ] = None,
    factory_id: FactoryFilter = None,
) -> Page[SessionOut]:
    """Sessions open for joins (or in the given statuses), the soonest to close first, with
    their current prices."""
    return await Page.read(
        paging, SessionOut, sessions.list_sessions, session, status_filter, factory_id
    )


@router.get("/api/group-buying/status-counts", response_model=dict[SessionStatus, int])
async def status_counts(_: AdminPrincipal, session: DbSession) -> dict[SessionStatus, int]:
    """How many sessions are in each status, for the admin's dashboard."""
    return await sessions.count_by_status(session)


@router.get("/api/group-buying/participations/me", response_model=Page[ParticipationOut])
async def my_participations(
    principal: BuyerPrincipal, session: DbSession, paging: LongPaging
) -> Page[ParticipationOut]:
    return await Page.read(
        paging, ParticipationOut, sessions.list_participations, session, principal.user_id
    )


@router.post("/api/group-buying/payment-events", response_model=PaymentEventOut)
async def payment_event(
    body: PaymentEvent, _: PaymentReporter, session: OutboxSession
) -> PaymentEventOut:
    """payment-service reports a participant's payment as paid, expired or failed."""
    return await sessions.apply_payment_event(session, body)


@router.post("/api/group-buying/process-expired", response_model=ProcessExpiredOut)
async def process_expired(_: AdminPrincipal, closer: SessionCloser) -> ProcessExpiredOut:
    """Seed step 5: close the sessions past their end time. Unpaid joins are cancelled; below
    the MOQ the session fails and the paid are refunded in full; otherwise each is refunded the
    difference to the final tier, orders are made and the stock taken out (success), or bundles
    ordered for what is short (pending_stock). Safe to run at once and again after a crash."""
    return await closer.close_expired()


# One session -------------------------------------------------------------------------------


@router.get(
    "/api/group-buying/{session_ref}", response_model=SessionOut, dependencies=[Depends(public)]
)
async def get_session(session_ref: SessionRef, session: DbSession) -> SessionOut:
    """A session by id or code, with its status, paid quantity, fill and current tier."""
    return await sessions.get_session(session, session_ref)


@router.post(
    "/api/group-buying/{session_ref}/join",
    response_model=JoinOut,
    status_code=status.HTTP_201_CREATED,
    responses={
        503: problem_doc("warehouse- or payment-service unavailable; nothing was kept"),
        **RATE_LIMITED_RESPONSES,
    },
)
async def join_session(
    session_ref: SessionRef,
    body: JoinRequest,
    principal: BuyerPrincipal,
    saga: Saga,
    request: Request,
) -> JoinOut:
    """Seed step 3: reserve the stock, record the participant and open its escrow payment.
    Joins are limited per client address and per buyer (429 with Retry-After), and a buyer's
    units awaiting payment in one group buy are capped (409 `unpaid_units_limit`)."""
    return await saga.join(session_ref, body, principal.user_id, client_address(request))


@router.get(
    "/api/group-buying/{session_ref}/variant-availability",
    response_model=SessionAvailabilityOut,
    dependencies=[Depends(public)],
)
async def variant_availability(
    session_ref: SessionRef, session: DbSession, warehouse: Warehouse
) -> SessionAvailabilityOut:
    """Each variant's available stock and status in the warehouse, and whether it can be joined."""
    return await sessions.variant_availability(session, warehouse, session_ref)


@router.get("/api/group-buying/{session_ref}/participants", response_model=Page[ParticipantOut])
async def list_participants(
    session_ref: SessionRef,
    _: AdminOrOrder,
    session: DbSession,
    paging: ParticipantsPaging,
    status_filter: StatusFilter[ParticipantStatus] = None,
) -> Page[ParticipantOut]:
    return await Page.read(
        paging, ParticipantOut, sessions.list_participants, session, session_ref, status_filter
    )


@router.post("/api/group-buying/{session_ref}/cancel", response_model=SessionOut)
async def cancel_session(
    session_ref: SessionRef, _: AdminPrincipal, session: OutboxSession
) -> SessionOut:
    """Call the session off: participants cancelled, invoices expired, stock released."""
    return await sessions.cancel_session(session, session_ref)


@router.post("/api/group-buying/{session_ref}/stock-received", response_model=SessionOut)
async def stock_received(
    session_ref: SessionRef, _: AdminOrWarehouse, closer: SessionCloser
) -> SessionOut:
    """The warehouse has fulfilled a session waiting for stock: its escrow is released and it
    succeeds. Reporting it again changes nothing."""
    return await closer.stock_received(session_ref)


# Audit (`laku audit`) -------------------------------------------------------------------------


add_invariants(router, audit.audit, "/api/admin/audit")


@router.get("/api/admin/audit/participants", response_model=list[AuditParticipantOut])
async def audit_participants(
    _: Auditor,
    session: DbSession,
    after: Annotated[uuid.UUID | None, Query()] = None,
    changed_since: Annotated[AwareDatetime | None, Query(alias="changedSince")] = None,
    limit: PageSize = AUDIT_PAGE_SIZE,
) -> list[AuditParticipantOut]:
    """Participants pending payment or paid, and any other changed since `changedSince`, by
    id after `after`, a page at a time."""
    return await audit.live_participants_page(session, after, changed_since, limit)
