import uuid
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response, status
from pydantic import AwareDatetime

from laku.audit import AUDIT_TIMEOUT_SECONDS, DEFAULT_GRACE, AuditClients, run_audit
from laku.core.app import DbSession
from laku.core.audit import AuditOut
from laku.core.audit_admin import add_id_stream, add_invariants, admin_audit_router
from laku.core.errors import PROBLEM_RESPONSES, Forbidden, InvalidInput
from laku.core.http import new_http_client
from laku.core.routing import FactoryFilter, OutboxSession, StatusFilter, created_status, post_once
from laku.core.schemas import Page, Paging
from laku.core.security import (
    AdminOrFactory,
    AdminPrincipal,
    Principal,
    Role,
    require_service_callers,
)
from laku.factory.client import FactoryClient
from laku.payment.client import PaymentClient
from laku.settlement import audit, ledger, receivables, settlements, warehouse_invoices
from laku.settlement.rules import SettlementStatus, sees_factory
from laku.settlement.schemas import (
    AuditSettlementOut,
    EscrowRefundsOut,
    EscrowRefundsReport,
    LedgerBalancesOut,
    LedgerEntryOut,
    PayoutAccountIn,
    PayoutAccountOut,
    SettlementCreate,
    SettlementDetailOut,
    SettlementOut,
    SettlementPreviewOut,
    WarehouseInvoicePaid,
)

# A day: an audit judges everything older than that.
MAX_GRACE_SECONDS = 86_400

router = APIRouter(prefix="/api/settlements", tags=["settlement"], responses=PROBLEM_RESPONSES)
ledger_router = APIRouter(prefix="/api/ledger", tags=["ledger"], responses=PROBLEM_RESPONSES)
audit_router = admin_audit_router()
PaymentReporter = Annotated[Principal, Depends(require_service_callers("payment"))]
WarehouseReporter = Annotated[Principal, Depends(require_service_callers("warehouse"))]

# Admins run settlements; a factory account (`AdminOrFactory`) reads its own factory's.
FactoryId = Annotated[uuid.UUID, Query(alias="factoryId")]


def _factories(request: Request) -> FactoryClient:
    return request.app.state.factories


def _payments(request: Request) -> PaymentClient:
    return request.app.state.payments


def _fee_bps(request: Request) -> int:
    return request.app.state.settings.platform_fee_bps


def _check_sees(principal: Principal, factory_id: uuid.UUID) -> None:
    if not sees_factory(principal, factory_id):
        raise Forbidden("A factory account sees only its own factory's settlements")


@router.post("", response_model=SettlementDetailOut, status_code=status.HTTP_201_CREATED)
async def create_settlement(
    body: SettlementCreate, principal: AdminPrincipal, session: OutboxSession, request: Request
) -> SettlementDetailOut:
    """Seed step 10: settle the factory for the escrow released to it in [periodStart,
    periodEnd) (payment-service's figures), less the platform's fee and less what it owes back
    for refunds of escrow it was settled for earlier (`receivableDeducted`; what the net
    cannot cover is `receivableCarried` to the next settlement); its ledger entries are
    written and its payout requested in the same transaction. `totalAmount`, `platformFee`
    and `netAmount` may be left out; sent, each must equal the server's, else 409
    `settlement_mismatch`. A period overlapping one of the factory's settlements is refused
    (409 `settlement_period_overlaps`), so nothing is settled twice."""
    released = await settlements.released_escrow(
        _factories(request), _payments(request), body.factory_id, body.period_start, body.period_end
    )
    settlement = await settlements.create_settlement(session, body, released, _fee_bps(request))
    return await settlements.get_settlement(session, settlement.id, principal)


@router.get("/preview", response_model=SettlementPreviewOut)
async def preview_settlement(
    principal: AdminOrFactory,
    session: DbSession,
    request: Request,
    factory_id: FactoryId,
    period_start: Annotated[AwareDatetime, Query(alias="periodStart")],
    period_end: Annotated[AwareDatetime, Query(alias="periodEnd")],
) -> SettlementPreviewOut:
    """What settling the factory for [periodStart, periodEnd) would come to, per group buy,
    with the receivable it would net out; nothing is stored."""
    _check_sees(principal, factory_id)
    if period_end <= period_start:
        raise InvalidInput("periodEnd must be after periodStart", code="invalid_period")
    released = await settlements.released_escrow(
        _factories(request), _payments(request), factory_id, period_start, period_end
    )
    return await settlements.preview(session, released, _fee_bps(request))


@router.get("", response_model=Page[SettlementOut])
async def list_settlements(
    principal: AdminOrFactory,
    session: DbSession,
    paging: Paging,
    factory_id: FactoryFilter = None,
    settlement_status: StatusFilter[SettlementStatus] = None,
) -> Page[SettlementOut]:
    """Newest period first. A factory account sees its own factory's only."""
    if principal.is_unbound_factory:  # no factory to scope by: nothing, never everything
        return Page.of([], 0, paging)
    if principal.role is Role.FACTORY:
        if factory_id is not None and factory_id != principal.factory_id:
            raise Forbidden("A factory account sees only its own factory's settlements")
        factory_id = principal.factory_id
    return await Page.read(
        paging,
        SettlementOut,
        settlements.list_settlements,
        session,
        factory_id=factory_id,
        status=settlement_status,
    )


@router.put("/payout-accounts/{factory_id}", response_model=PayoutAccountOut)
async def set_payout_account(
    factory_id: uuid.UUID,
    body: PayoutAccountIn,
    _: AdminPrincipal,
    session: DbSession,
    request: Request,
) -> PayoutAccountOut:
    """Where the factory's settlements are paid (a bank account, as Xendit pays out to it)."""
    if await _factories(request).get_factory(factory_id) is None:
        raise settlements.UnknownFactory(f"No factory {factory_id}")
    return PayoutAccountOut.model_validate(
        await settlements.set_payout_account(session, factory_id, body)
    )


@router.get("/payout-accounts/{factory_id}", response_model=PayoutAccountOut)
async def get_payout_account(
    factory_id: uuid.UUID, principal: AdminOrFactory, session: DbSession
) -> PayoutAccountOut:
    _check_sees(principal, factory_id)
    return PayoutAccountOut.model_validate(
        await settlements.get_payout_account(session, factory_id)
    )


@router.post("/escrow-refunds", response_model=EscrowRefundsOut)
async def report_escrow_refunds(
    body: EscrowRefundsReport, _: PaymentReporter, session: DbSession
) -> EscrowRefundsOut:
    """payment-service reports refunds of escrow it had released to a factory (cancelled
    orders). One the factory was already settled for becomes a receivable the factory's next
    settlement nets out; one of a period not settled yet waits for that settlement. Each is
    accounted for once, by its refund id: reported again, it is answered as recorded."""
    return await receivables.record_escrow_refunds(session, body.refunds)


@router.post("/{settlement_id}/retry-payout", response_model=SettlementDetailOut)
async def retry_payout(
    settlement_id: uuid.UUID, principal: AdminPrincipal, session: OutboxSession
) -> SettlementDetailOut:
    """Pay a `payout_failed` settlement again, to the factory's payout account as it is now
    (set it first to correct it): a new payout with its own reference, the failed one kept in
    `failedPayouts` and never paid. Any other status: 409 `payout_not_failed`."""
    await settlements.retry_payout(session, settlement_id)
    return await settlements.get_settlement(session, settlement_id, principal)


@router.get("/{settlement_id}", response_model=SettlementDetailOut)
async def get_settlement(
    settlement_id: uuid.UUID, principal: AdminOrFactory, session: DbSession
) -> SettlementDetailOut:
    """With the group buys it covered and its ledger entries."""
    return await settlements.get_settlement(session, settlement_id, principal)


@ledger_router.get("/balances", response_model=LedgerBalancesOut)
async def ledger_balances(_: AdminPrincipal, session: DbSession) -> LedgerBalancesOut:
    """Each account's debits and credits; the total debits always equal the total credits."""
    return await ledger.balances(session)


# Audit (`laku audit`) -------------------------------------------------------------------------


@audit_router.get("", response_model=AuditOut)
async def audit_platform(
    _: AdminPrincipal,
    request: Request,
    grace_seconds: Annotated[float, Query(alias="graceSeconds", ge=0, le=MAX_GRACE_SECONDS)] = (
        DEFAULT_GRACE.total_seconds()
    ),
) -> AuditOut:
    """The whole platform's audit, as `laku audit` prints it: every service's own invariants
    and those across services (stock, escrow, wallets, the ledger, participants' holds and
    payments), each with its figures and first offenders. Rows changed within `graceSeconds`
    are counted as in flight, not judged."""
    async with new_http_client(AUDIT_TIMEOUT_SECONDS) as http:
        clients = AuditClients.connect(
            request.app.state.settings, http, request.app.state.service_tokens
        )
        return await run_audit(clients, timedelta(seconds=grace_seconds))


add_invariants(audit_router, audit.audit, "/ledger")
add_id_stream(audit_router, "/settlements", audit.settlements_page, AuditSettlementOut, 100)


@post_once(ledger_router, "/warehouse-invoices", LedgerEntryOut, "Posted before")
async def warehouse_invoice_paid(
    body: WarehouseInvoicePaid, _: WarehouseReporter, session: DbSession, response: Response
) -> LedgerEntryOut:
    """warehouse-service reports a warehouse invoice paid: Dr `inventory` (goods and inbound
    shipping), Dr `ppn_input` (PPN), Cr `cash_bank` (the total). Once per invoice: reporting
    it again answers the entry (200)."""
    entry, posted = await warehouse_invoices.record_paid(session, body)
    response.status_code = created_status(posted)
    return entry
