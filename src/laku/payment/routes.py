import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response, status
from pydantic import AwareDatetime

from laku.core.app import DbSession
from laku.core.audit_admin import (
    add_id_stream,
    add_invariants,
    add_reference_stream,
    admin_audit_router,
)
from laku.core.errors import PROBLEM_RESPONSES, InvalidInput
from laku.core.routing import StatusFilter, UserFilter, created_status, post_once
from laku.core.schemas import Page, Paging, ReferencePath
from laku.core.security import (
    USER_ROLES,
    Auditor,
    BuyerOrAdmin,
    Principal,
    Role,
    require_roles,
)
from laku.payment import audit, escrow, expiry, payments, refunds
from laku.payment.schemas import (
    AuditPaymentOut,
    AuditRefundOut,
    EscrowRelease,
    EscrowReleasedOut,
    EscrowReleaseOut,
    PaymentCreate,
    PaymentOut,
    PaymentsExpire,
    PaymentsExpireOut,
    PaymentStatus,
    ReferenceExpiredOut,
    RefundsCreate,
    RefundsOut,
    WebhookAck,
    XenditInvoiceCallback,
)
from laku.providers.webhooks import provider_webhook
from laku.providers.xendit.client import CALLBACK_TOKEN_HEADER, verify_callback_token

router = APIRouter(prefix="/api/payments", tags=["payment"], responses=PROBLEM_RESPONSES)

# Payments are created and expired by the platform (group-buying, admins), never by buyers.
# Internal callers, by the service whose client calls the operation.
AdminOrGroupBuying = Annotated[
    Principal, Depends(require_roles(Role.ADMIN, services=["group-buying"]))
]
Refunder = Annotated[
    Principal, Depends(require_roles(Role.ADMIN, services=["group-buying", "order"]))
]
# Group-buying creates the payments and may read them back.
PaymentViewer = Annotated[Principal, Depends(require_roles(*USER_ROLES, services=["group-buying"]))]
PaymentCode = Annotated[str, Path(max_length=32, pattern=r"^[A-Za-z0-9-]+$")]


def _payments(request: Request) -> payments.Payments:
    return request.app.state.payments


# Xendit's webhooks are known by the shared callback token.
_xendit_callback = provider_webhook(
    CALLBACK_TOKEN_HEADER, verify_callback_token, "invalid_callback_token"
)


@post_once(
    router,
    "",
    PaymentOut,
    "The reference already has this payment",
    {503: {"description": "Xendit is unavailable; retrying with the reference is safe"}},
)
async def create_payment(
    body: PaymentCreate, _: AdminOrGroupBuying, request: Request, response: Response
) -> PaymentOut:
    """Create the escrow payment and its Xendit invoice; `invoiceUrl` is where the buyer pays.
    The same `reference` again returns the first payment (200) and creates no second invoice."""
    created = await _payments(request).create(body)
    response.status_code = created_status(created.created)
    return PaymentOut.model_validate(created.payment)


@router.post(
    "/webhook",
    response_model=WebhookAck,
    dependencies=[Depends(_xendit_callback)],
    responses={
        200: {"description": "Applied, or acknowledged and ignored"},
        503: {"description": "Xendit could not be asked about the invoice; Xendit retries"},
    },
)
async def xendit_webhook(callback: XenditInvoiceCallback, request: Request) -> WebhookAck:
    """Xendit's invoice callback (seed step 4), authenticated by `x-callback-token` (not a
    bearer token) and then taken only as a hint: the payment's invoice is read back from Xendit,
    checked against the payment (invoice id, `external_id`, amount, IDR), and Xendit's status
    decides: PAID or SETTLED → paid with the money held in escrow; EXPIRED → expired if still
    unpaid. Matched by `external_id`; `id`, when sent, must be the payment's invoice. Repeated
    and out-of-order callbacks change a payment at most once."""
    return WebhookAck(status=await _payments(request).apply_callback(callback))


# Closing a group buy, in bulk -------------------------------------------------------------------


@router.post("/refunds", response_model=RefundsOut, status_code=status.HTTP_201_CREATED)
async def refund(
    body: RefundsCreate, _: Refunder, session: DbSession, request: Request
) -> RefundsOut:
    """Refund paid payments whose escrow is held into their buyers' wallets (tier refunds,
    failed or cancelled groups; a cancelled order's also once the escrow was released), up to
    2,000 items a call: all in one transaction or, on any 409, nothing. A whole refund makes
    the payment and its escrow `refunded`. The wallets are credited shortly after, each refund
    once; a `reference` already refunded moves nothing."""
    refunded = await refunds.refund(session, body)
    if refunded.refunded:
        request.app.state.outbox_relay.wake()
    return refunded


@router.post("/escrow/release", response_model=EscrowReleaseOut)
async def release_escrow(
    body: EscrowRelease, _: AdminOrGroupBuying, session: DbSession
) -> EscrowReleaseOut:
    """Release the held escrow of paid payments (their group succeeded) to the group's
    factory, up to 5,000 a call; `amount` is what was paid less what was refunded, for the
    factory's settlement. Already released ones are left as they are; any other refuses the
    whole call."""
    return await escrow.release_escrow(
        session, body.payment_ids, body.factory_id, body.group_session_id
    )


@router.get("/escrow/released", response_model=EscrowReleasedOut)
async def escrow_released(
    _: Auditor,
    session: DbSession,
    factory_id: Annotated[uuid.UUID, Query(alias="factoryId")],
    start: Annotated[AwareDatetime, Query(alias="from")],
    end: Annotated[AwareDatetime, Query(alias="to")],
) -> EscrowReleasedOut:
    """What escrow released to the factory in [from, to) (by release time), in total and per
    group buy, less refunds made since: what the factory is settled for; with the cancelled
    orders' refunds those figures took off, read in the same snapshot."""
    if end <= start:
        raise InvalidInput("`to` must be after `from`", code="invalid_period")
    return await escrow.released_to(session, factory_id, start, end)


@router.post("/expire-bulk", response_model=PaymentsExpireOut)
async def expire_many(
    body: PaymentsExpire, _: AdminOrGroupBuying, session: DbSession, request: Request
) -> PaymentsExpireOut:
    """Expire pending payments (their session closed first), up to 5,000 a call, in one
    transaction; their invoices are closed at Xendit shortly after. Paid ones are left as they
    are and counted, for the caller to decide. Not reported to group-buying, which asked."""
    expired = await expiry.expire_many(session, body.payment_ids)
    if expired.expired:
        request.app.state.outbox_relay.wake()
    return expired


@router.post(
    "/by-reference/{reference}/expire",
    response_model=ReferenceExpiredOut,
    responses={503: {"description": "Xendit is unavailable; retrying is safe"}},
)
async def expire_by_reference(
    reference: ReferencePath, _: AdminOrGroupBuying, request: Request
) -> ReferenceExpiredOut:
    """The caller gave up on the payment for `reference` (a join that failed or timed out),
    made or not: its invoice is closed, or, if none was made yet, none ever will be (a
    creation arriving later is refused with `payment_voided`). A payment still being created
    answers 409 `payment_in_progress` (ask again); a paid one 409 `payment_already_paid`."""
    expiry = await _payments(request).expire_by_reference(reference)
    return ReferenceExpiredOut(
        reference=expiry.reference,
        status=expiry.status,
        payment=None if expiry.payment is None else PaymentOut.model_validate(expiry.payment),
    )


@router.get("", response_model=Page[PaymentOut])
async def list_payments(
    principal: BuyerOrAdmin,
    session: DbSession,
    paging: Paging,
    payment_status: StatusFilter[PaymentStatus] = None,
    user_id: UserFilter = None,
) -> Page[PaymentOut]:
    """Newest first. A buyer sees only their own payments; admins and services see all."""
    user_id = principal.listed_user(user_id, "payments")
    return await Page.read(
        paging, PaymentOut, payments.list_payments, session, user_id=user_id, status=payment_status
    )


@router.get("/by-code/{payment_code}", response_model=PaymentOut)
async def get_payment_by_code(
    payment_code: PaymentCode, _: AdminOrGroupBuying, session: DbSession
) -> PaymentOut:
    """The payment whose code is the Xendit invoice's `external_id`."""
    return PaymentOut.model_validate(await payments.get_by_code(session, payment_code))


@router.get("/{payment_id}", response_model=PaymentOut)
async def get_payment(
    payment_id: uuid.UUID, principal: PaymentViewer, session: DbSession
) -> PaymentOut:
    """The buyer who pays it, admins and services; to anyone else it does not exist."""
    return PaymentOut.model_validate(await payments.get_payment(session, payment_id, principal))


@router.post(
    "/{payment_id}/expire",
    response_model=PaymentOut,
    responses={503: {"description": "Xendit is unavailable; retrying is safe"}},
)
async def expire_payment(
    payment_id: uuid.UUID, _: AdminOrGroupBuying, request: Request
) -> PaymentOut:
    """Close the invoice so it can no longer be paid (e.g. its session closed first). An
    expired payment is returned as it is; a paid one is refused with `payment_already_paid`."""
    return PaymentOut.model_validate(await _payments(request).expire(payment_id))


# Audit (`laku audit`) -------------------------------------------------------------------------

audit_router = admin_audit_router()
add_invariants(audit_router, audit.audit)
add_reference_stream(audit_router, "/payments", audit.payments_page, AuditPaymentOut)
add_id_stream(audit_router, "/refunds", audit.refunds_page, AuditRefundOut)
