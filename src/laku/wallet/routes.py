import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request, Response, status

from laku.core.app import DbSession
from laku.core.audit_admin import add_invariants, add_reference_stream, admin_audit_router
from laku.core.errors import PROBLEM_RESPONSES, Unauthorized
from laku.core.routing import OutboxSession, created_status, post_once
from laku.core.schemas import LongPaging, Page
from laku.core.security import (
    PROVIDER_WEBHOOK,
    BuyerPrincipal,
    Principal,
    Role,
    declares_access,
    require_roles,
)
from laku.providers.xendit.client import verify_callback_token
from laku.wallet import audit, wallets, withdrawals
from laku.wallet.rules import TransactionDirection
from laku.wallet.schemas import (
    AuditCreditOut,
    BulkCreditsCreate,
    BulkCreditsOut,
    MovementCreate,
    PayoutWebhook,
    WalletOut,
    WalletTransactionOut,
    WebhookAck,
    WithdrawalCreate,
    WithdrawalOut,
)

router = APIRouter(prefix="/api/wallets", tags=["wallet"], responses=PROBLEM_RESPONSES)

# Only buyers hold wallets (`BuyerPrincipal`); admins and services act on anyone's.
# Payment-service is the one service moving buyers' wallet money (it credits refunds and
# reads balances back).
AdminOrPayment = Annotated[Principal, Depends(require_roles(Role.ADMIN, services=["payment"]))]
# A credit or a debit: 201 with its transaction, or 200 with the one its key made before.
_MOVED_BEFORE = "This idempotencyKey moved money before"


async def _move(
    direction: TransactionDirection, body: MovementCreate, session: DbSession
) -> Response:
    recorded = await wallets.move(session, direction, wallets.Movement.from_request(body))
    return Response(
        WalletTransactionOut.model_validate(recorded.transaction).model_dump_json(by_alias=True),
        status_code=created_status(recorded.created),
        media_type="application/json",
    )


# The caller's own wallet ----------------------------------------------------------------------


@router.get("/me", response_model=WalletOut)
async def my_wallet(principal: BuyerPrincipal, session: DbSession) -> WalletOut:
    return await wallets.get_wallet(session, principal.user_id)


@router.get("/me/transactions", response_model=Page[WalletTransactionOut])
async def my_transactions(
    principal: BuyerPrincipal, session: DbSession, paging: LongPaging
) -> Page[WalletTransactionOut]:
    """Newest first."""
    return await wallets.list_transactions(session, principal.user_id, paging.limit, paging.offset)


@router.post("/me/withdrawals", response_model=WithdrawalOut, status_code=status.HTTP_201_CREATED)
async def withdraw(
    body: WithdrawalCreate, principal: BuyerPrincipal, session: OutboxSession
) -> WithdrawalOut:
    """Send part of the balance to a bank account. The amount leaves the wallet at once
    (`pending`); a payout that fails brings it back. Send an `Idempotency-Key` to retry safely."""
    withdrawal = await withdrawals.create_withdrawal(session, principal.user_id, body)
    return WithdrawalOut.model_validate(withdrawal)


@router.get("/me/withdrawals", response_model=Page[WithdrawalOut])
async def my_withdrawals(
    principal: BuyerPrincipal, session: DbSession, paging: LongPaging
) -> Page[WithdrawalOut]:
    """Newest first."""
    return await withdrawals.list_withdrawals(
        session, principal.user_id, paging.limit, paging.offset
    )


@router.get("/me/withdrawals/{withdrawal_id}", response_model=WithdrawalOut)
async def my_withdrawal(
    withdrawal_id: uuid.UUID, principal: BuyerPrincipal, session: DbSession
) -> WithdrawalOut:
    withdrawal = await withdrawals.get_withdrawal(session, withdrawal_id, owner=principal.user_id)
    return WithdrawalOut.model_validate(withdrawal)


# Internal: credits and debits ---------------------------------------------------------------


@post_once(router, "/credits", WalletTransactionOut, _MOVED_BEFORE)
async def credit(body: MovementCreate, _: AdminOrPayment, session: DbSession) -> Response:
    """Add to a user's wallet (tier refunds, failed-group refunds). The same idempotencyKey
    again answers 200 with the first transaction and credits nothing."""
    return await _move(TransactionDirection.CREDIT, body, session)


@router.post("/credits/bulk", response_model=BulkCreditsOut, status_code=status.HTTP_201_CREATED)
async def credit_bulk(
    body: BulkCreditsCreate, _: AdminOrPayment, session: DbSession
) -> BulkCreditsOut:
    """Up to 2,000 credits in one transaction (a closed group buy's refunds). A key that
    credited before counts as `alreadyCredited` and moves nothing; a key used for another
    credit refuses the whole batch with `idempotency_key_reused`, nothing moved."""
    return await wallets.credit_bulk(
        session, [wallets.Movement.from_request(item) for item in body.items]
    )


@post_once(router, "/debits", WalletTransactionOut, _MOVED_BEFORE)
async def debit(body: MovementCreate, _: AdminOrPayment, session: DbSession) -> Response:
    """Take from a user's wallet (adjustments); more than the balance is refused with 409
    `insufficient_balance` and nothing moves."""
    return await _move(TransactionDirection.DEBIT, body, session)


# Xendit payout webhook ----------------------------------------------------------------------


@declares_access(PROVIDER_WEBHOOK)
async def _xendit(
    request: Request,
    x_callback_token: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> None:
    if not verify_callback_token(request.app.state.settings, x_callback_token):
        raise Unauthorized("Invalid x-callback-token", code="invalid_callback_token")


# Declared before /{user_id} so "payouts" is not taken for a user id.
@router.post(
    "/payouts/webhook",
    response_model=WebhookAck,
    dependencies=[Depends(_xendit)],
    responses={503: {"description": "Xendit could not be asked about the payout; Xendit retries"}},
)
async def payout_webhook(body: PayoutWebhook, request: Request) -> WebhookAck:
    """Xendit reports a payout's outcome (authenticated by `x-callback-token`), taken only as
    a hint: the payout is read back from Xendit and checked against the withdrawal (id,
    reference, amount), and Xendit's status decides: SUCCEEDED settles the withdrawal; FAILED,
    CANCELLED or REVERSED gives the money back, once however often it is sent."""
    await request.app.state.withdrawal_payouts.apply_webhook(body)
    return WebhookAck()


# Anyone's wallet (admin, service) -------------------------------------------------------------


@router.get("/{user_id}", response_model=WalletOut)
async def user_wallet(user_id: uuid.UUID, _: AdminOrPayment, session: DbSession) -> WalletOut:
    return await wallets.get_wallet(session, user_id)


@router.get("/{user_id}/transactions", response_model=Page[WalletTransactionOut])
async def user_transactions(
    user_id: uuid.UUID, _: AdminOrPayment, session: DbSession, paging: LongPaging
) -> Page[WalletTransactionOut]:
    """Newest first."""
    return await wallets.list_transactions(session, user_id, paging.limit, paging.offset)


@router.get("/{user_id}/withdrawals", response_model=Page[WithdrawalOut])
async def user_withdrawals(
    user_id: uuid.UUID, _: AdminOrPayment, session: DbSession, paging: LongPaging
) -> Page[WithdrawalOut]:
    return await withdrawals.list_withdrawals(session, user_id, paging.limit, paging.offset)


# Audit (`laku audit`) -------------------------------------------------------------------------

audit_router = admin_audit_router()
add_invariants(audit_router, audit.audit)
add_reference_stream(audit_router, "/refund-credits", audit.refund_credits_page, AuditCreditOut)
