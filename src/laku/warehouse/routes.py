import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response, status

from laku.core.app import DbSession
from laku.core.audit_admin import add_invariants, add_reference_stream
from laku.core.errors import PROBLEM_RESPONSES, InvalidInput
from laku.core.routing import (
    OutboxSession,
    ProductFilter,
    StatusFilter,
    created_status,
    from_attributes,
    post_once,
)
from laku.core.schemas import LongPaging, Page, ReferencePath
from laku.core.security import (
    AdminOrFactory,
    AdminPrincipal,
    Principal,
    Role,
    require_roles,
    require_service_callers,
)
from laku.warehouse import (
    audit,
    fulfilment,
    inventory,
    invoices,
    purchase_orders,
    reservations,
)
from laku.warehouse.access import sees_factory
from laku.warehouse.models import Fulfilment, Inventory, PurchaseOrder
from laku.warehouse.rules import StockStatus, WarehouseInvoiceStatus, stock_status
from laku.warehouse.schemas import (
    AdjustmentCreate,
    AuditReservationOut,
    FulfilmentCreate,
    FulfilmentOut,
    GroupConfirm,
    GroupConfirmOut,
    GroupRelease,
    GroupReleaseOut,
    InventoryBatch,
    InventoryOut,
    InvoicePayment,
    LedgerCheckOut,
    MovementOut,
    ProductStockOut,
    PurchaseOrderLineOut,
    PurchaseOrderOut,
    ReservationCreate,
    ReservationOut,
    ShipmentNotice,
    WarehouseInvoiceOut,
)

router = APIRouter(tags=["warehouse"], responses=PROBLEM_RESPONSES)

# Internal callers, by the service whose client calls the operation.
AdminOrGroupBuying = Annotated[
    Principal, Depends(require_roles(Role.ADMIN, services=["group-buying"]))
]
GroupBuyingOnly = Annotated[Principal, Depends(require_service_callers("group-buying"))]

_STATUS_RANK = [StockStatus.IN_STOCK, StockStatus.LOW_STOCK, StockStatus.OUT_OF_STOCK]


def _inventory_out(row: Inventory) -> InventoryOut:
    return from_attributes(
        InventoryOut, row, status=stock_status(row.available_quantity, row.reorder_threshold)
    )


# Inventory ---------------------------------------------------------------------------------


@router.post(
    "/api/inventory", response_model=list[InventoryOut], status_code=status.HTTP_201_CREATED
)
async def create_inventory(
    body: InventoryBatch, request: Request, _: AdminPrincipal, session: OutboxSession
) -> list[InventoryOut]:
    items = body.root
    products = {}
    for product_id in {item.product_id for item in items}:
        if product := await request.app.state.products.get_product(product_id):
            products[product_id] = product
    rows = await inventory.create_inventory(session, items, products)
    return [_inventory_out(row) for row in rows]


@router.get("/api/inventory", response_model=list[ProductStockOut])
async def list_inventory(
    _: AdminOrGroupBuying,
    session: DbSession,
    product_id: ProductFilter = None,
) -> list[ProductStockOut]:
    """Stock per product and variant, with each variant's status and the product's worst."""
    by_product: dict[uuid.UUID, list[InventoryOut]] = {}
    for row in await inventory.list_inventory(session, product_id):
        by_product.setdefault(row.product_id, []).append(_inventory_out(row))
    return [
        ProductStockOut(
            product_id=pid,
            status=max((v.status for v in variants), key=_STATUS_RANK.index),
            variants=variants,
        )
        for pid, variants in by_product.items()
    ]


@router.get("/api/inventory/low-stock", response_model=list[InventoryOut])
async def low_stock(_: AdminPrincipal, session: DbSession) -> list[InventoryOut]:
    return [_inventory_out(row) for row in await inventory.list_inventory(session, low_only=True)]


@router.get("/api/inventory/ledger-check", response_model=list[LedgerCheckOut])
async def ledger_check(
    _: AdminPrincipal,
    session: DbSession,
    product_id: ProductFilter = None,
) -> list[LedgerCheckOut]:
    """Audit: every variant's stock against the sums of its movement ledger."""
    return await inventory.ledger_check(session, product_id)


@router.get("/api/inventory/{variant_id}", response_model=InventoryOut)
async def get_inventory(
    variant_id: uuid.UUID, _: AdminPrincipal, session: DbSession
) -> InventoryOut:
    return _inventory_out(await inventory.get_inventory(session, variant_id))


@router.post("/api/inventory/{variant_id}/adjustments", response_model=InventoryOut)
async def adjust(
    variant_id: uuid.UUID, body: AdjustmentCreate, _: AdminPrincipal, session: OutboxSession
) -> InventoryOut:
    return _inventory_out(await inventory.adjust(session, variant_id, body))


@router.get("/api/inventory/{variant_id}/movements", response_model=list[MovementOut])
async def movements(
    variant_id: uuid.UUID,
    _: AdminPrincipal,
    session: DbSession,
    paging: LongPaging,
):
    return await inventory.movements(session, variant_id, paging.limit, paging.offset)


# Reservations ------------------------------------------------------------------------------


@post_once(router, "/api/reservations", ReservationOut, "Already reserved under this reference")
async def reserve(body: ReservationCreate, request: Request, _: AdminOrGroupBuying) -> Response:
    """Reserve stock under a reference; the same reference again returns that reservation."""
    reserved = await request.app.state.reservation_desk.reserve(body)
    # The hottest endpoint: serialised once here rather than validated again by FastAPI.
    return Response(
        reserved.reservation.model_dump_json(by_alias=True),
        status_code=created_status(reserved.created),
        media_type="application/json",
    )


@router.get("/api/reservations/{reference}", response_model=ReservationOut)
async def get_reservation(
    reference: ReferencePath, _: AdminPrincipal, session: DbSession
) -> ReservationOut:
    return await reservations.get_reservation(session, reference)


@router.post("/api/reservations/{reference}/release", response_model=ReservationOut)
async def release(
    reference: ReferencePath, _: AdminOrGroupBuying, session: DbSession
) -> ReservationOut:
    """Give the stock back. A reference never reserved is answered `void` and stays so: a
    reserve arriving after its own undo is refused (409 `reservation_released`)."""
    return await reservations.release(session, reference)


@router.post("/api/reservations/{reference}/confirm", response_model=ReservationOut)
async def confirm(
    reference: ReferencePath, _: GroupBuyingOnly, session: DbSession
) -> ReservationOut:
    """The hold's join was paid: it no longer lapses. Again changes nothing; a hold already
    released (it lapsed) answers 409 `reservation_released`."""
    return await reservations.confirm(session, reference)


@router.post("/api/reservations/{reference}/deduct", response_model=ReservationOut)
async def deduct(reference: ReferencePath, _: AdminPrincipal, session: DbSession) -> ReservationOut:
    return await reservations.deduct(session, reference)


# Groups of reservations ----------------------------------------------------------------------


def _fulfilment_out(row: Fulfilment) -> FulfilmentOut:
    return from_attributes(FulfilmentOut, row, group=row.group_reference)


@router.post("/api/reservation-groups/{group}/release", response_model=GroupReleaseOut)
async def release_group(
    group: ReferencePath,
    _: AdminOrGroupBuying,
    session: DbSession,
    body: GroupRelease | None = None,
) -> GroupReleaseOut:
    """Release the reservations of a group buy: all (it failed or was cancelled), or those
    named (unpaid joins when it closes)."""
    references = body.references if body else None
    released, units = await fulfilment.release_group(session, group, references)
    return GroupReleaseOut(group=group, released=released, units=units)


@router.post("/api/reservation-groups/{group}/confirm", response_model=GroupConfirmOut)
async def confirm_group(
    group: ReferencePath, body: GroupConfirm, _: AdminOrGroupBuying, session: DbSession
) -> GroupConfirmOut:
    """Name a closing group buy's paid reservations (up to 5,000 a call): the fulfilment takes
    these from stock and releases the group's others. A paid hold that had lapsed is reserved
    again."""
    confirmed, restored, unknown = await fulfilment.confirm_group(session, group, body.references)
    return GroupConfirmOut(group=group, confirmed=confirmed, restored=restored, unknown=unknown)


@router.post("/api/reservation-groups/{group}/fulfil", response_model=FulfilmentOut)
async def fulfil_group(
    group: ReferencePath,
    body: FulfilmentCreate,
    request: Request,
    _: AdminOrGroupBuying,
    session: OutboxSession,
) -> FulfilmentOut:
    """Take a closed group buy's confirmed reservations out of stock (or order the bundles it
    lacks) and release its others."""
    state = request.app.state
    product = await state.products.get_product(body.product_id)
    if product is None:
        raise InvalidInput("Unknown product", code="unknown_product")
    composition = await state.group_buying.get_bundle_composition(body.product_id)
    fulfilled = await fulfilment.fulfil_group(
        session, group, product, composition, state.settings.purchase_order_shipping_cost_per_bundle
    )
    return _fulfilment_out(fulfilled)


@router.get("/api/reservation-groups/{group}/fulfilment", response_model=FulfilmentOut)
async def get_fulfilment(
    group: ReferencePath, _: AdminOrGroupBuying, session: DbSession
) -> FulfilmentOut:
    return _fulfilment_out(await fulfilment.get_fulfilment(session, group))


# Purchase orders ---------------------------------------------------------------------------


async def _purchase_order_out(session, purchase_order: PurchaseOrder) -> PurchaseOrderOut:
    lines = (await purchase_orders.purchase_order_lines(session, [purchase_order.id])).get(
        purchase_order.id, []
    )
    return _with_lines(purchase_order, lines)


def _with_lines(purchase_order: PurchaseOrder, lines) -> PurchaseOrderOut:
    lines_out = [PurchaseOrderLineOut.model_validate(line) for line in lines]
    return from_attributes(PurchaseOrderOut, purchase_order, lines=lines_out)


def _check_factory_access(principal: Principal, purchase_order: PurchaseOrder) -> None:
    if not sees_factory(principal, purchase_order.factory_id):
        raise purchase_orders.purchase_order_not_found()


@router.get("/api/purchase-orders", response_model=Page[PurchaseOrderOut])
async def list_purchase_orders(
    principal: AdminOrFactory,
    session: DbSession,
    paging: LongPaging,
    product_id: ProductFilter = None,
    status_filter: Annotated[
        str | None, Query(alias="status", pattern="^(open|shipped|received|cancelled)$")
    ] = None,
) -> Page[PurchaseOrderOut]:
    """Admins see every purchase order; a factory sees its own."""
    rows, total = await purchase_orders.list_purchase_orders(
        session,
        principal,
        product_id=product_id,
        status=status_filter,
        limit=paging.limit,
        offset=paging.offset,
    )
    lines = await purchase_orders.purchase_order_lines(session, [row.id for row in rows])
    return Page.of([_with_lines(row, lines.get(row.id, [])) for row in rows], total, paging)


@router.get("/api/purchase-orders/{purchase_order_id}", response_model=PurchaseOrderOut)
async def get_purchase_order(
    purchase_order_id: uuid.UUID, principal: AdminOrFactory, session: DbSession
) -> PurchaseOrderOut:
    purchase_order = await purchase_orders.get_purchase_order(session, purchase_order_id)
    _check_factory_access(principal, purchase_order)
    return await _purchase_order_out(session, purchase_order)


@router.post("/api/purchase-orders/{purchase_order_id}/ship", response_model=PurchaseOrderOut)
async def ship(
    purchase_order_id: uuid.UUID,
    body: ShipmentNotice,
    principal: AdminOrFactory,
    session: DbSession,
) -> PurchaseOrderOut:
    """The factory (or an admin for it) reports the bundles shipped, with a tracking number."""
    _check_factory_access(
        principal, await purchase_orders.get_purchase_order(session, purchase_order_id)
    )
    purchase_order = await purchase_orders.ship_purchase_order(
        session, purchase_order_id, body.tracking_number
    )
    return await _purchase_order_out(session, purchase_order)


@router.post("/api/purchase-orders/{purchase_order_id}/receive", response_model=PurchaseOrderOut)
async def receive(
    purchase_order_id: uuid.UUID, request: Request, _: AdminPrincipal, session: OutboxSession
) -> PurchaseOrderOut:
    """The bundles are in: stock rises (surplus above the maximum), the factory's warehouse
    invoice is written, and group buys waiting for this stock are completed."""
    settings = request.app.state.settings
    terms = invoices.InvoiceTerms(
        ppn_bps=settings.warehouse_invoice_ppn_bps, due_days=settings.warehouse_invoice_due_days
    )
    purchase_order = await purchase_orders.receive_purchase_order(session, purchase_order_id, terms)
    return await _purchase_order_out(session, purchase_order)


@router.post("/api/purchase-orders/{purchase_order_id}/cancel", response_model=PurchaseOrderOut)
async def cancel(
    purchase_order_id: uuid.UUID, _: AdminPrincipal, session: OutboxSession
) -> PurchaseOrderOut:
    purchase_order = await purchase_orders.cancel_purchase_order(session, purchase_order_id)
    return await _purchase_order_out(session, purchase_order)


# Audit (`laku audit`) -------------------------------------------------------------------------


add_invariants(router, audit.audit, "/api/admin/audit")
add_reference_stream(
    router, "/api/admin/audit/reservations", audit.reservations_page, AuditReservationOut
)


# Warehouse invoices --------------------------------------------------------------------------


@router.get("/api/warehouse-invoices", response_model=Page[WarehouseInvoiceOut])
async def list_warehouse_invoices(
    principal: AdminOrFactory,
    session: DbSession,
    paging: LongPaging,
    status_filter: StatusFilter[WarehouseInvoiceStatus] = None,
    purchase_order_id: Annotated[uuid.UUID | None, Query(alias="purchaseOrderId")] = None,
) -> Page[WarehouseInvoiceOut]:
    """Newest first. Admins see every invoice; a factory sees its own."""
    return await Page.read(
        paging,
        WarehouseInvoiceOut,
        invoices.list_invoices,
        session,
        principal,
        status=status_filter,
        purchase_order_id=purchase_order_id,
    )


@router.get("/api/warehouse-invoices/{invoice_id}", response_model=WarehouseInvoiceOut)
async def get_warehouse_invoice(
    invoice_id: uuid.UUID, principal: AdminOrFactory, session: DbSession
) -> WarehouseInvoiceOut:
    return WarehouseInvoiceOut.model_validate(
        await invoices.get_invoice(session, invoice_id, principal)
    )


@router.post("/api/warehouse-invoices/{invoice_id}/pay", response_model=WarehouseInvoiceOut)
async def pay_warehouse_invoice(
    invoice_id: uuid.UUID, body: InvoicePayment, _: AdminPrincipal, session: OutboxSession
) -> WarehouseInvoiceOut:
    """An admin records the invoice paid, with the transfer's reference: `paid`, and a
    balanced entry in the settlement ledger shortly after (Dr inventory and PPN input, Cr
    cash). The same reference again answers it as it is; another: 409 `invoice_already_paid`."""
    invoice = await invoices.pay(session, invoice_id, body.payment_reference)
    return WarehouseInvoiceOut.model_validate(invoice)
