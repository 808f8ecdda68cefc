"""Payments: creating them with their Xendit invoice, applying Xendit's callbacks, expiring them,
and reading them.

A payment moves `pending → paid | expired` only under its row lock, and each move enqueues its
report to group-buying in the same transaction, so duplicate, late or concurrent callbacks
change a payment once and report it once.
"""

import asyncio
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import structlog
from sqlalchemy import Select, func, or_, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from laku.core.db import Database
from laku.core.errors import Conflict, InvalidInput, NotFound, UpstreamUnavailable
from laku.core.outbox import enqueue
from laku.core.problems import problem
from laku.core.rows import found, page
from laku.core.security import Principal
from laku.group_buying.client import PaymentEvent, PaymentEventStatus
from laku.payment.models import Payment, VoidedReference, outbox
from laku.payment.rules import (
    ABANDONED_AFTER,
    ACTED_ON_INVOICE_STATUSES,
    EXPIRED_INVOICE_STATUS,
    PAID_INVOICE_STATUSES,
    REPORTED_REFERENCE_PREFIX,
    EscrowStatus,
    PaymentStatus,
    invoice_duration_seconds,
    new_payment_code,
)
from laku.payment.schemas import PaymentCreate, XenditInvoiceCallback
from laku.payment.tasks import REPORT_PAYMENT_EVENT
from laku.providers.http import provider_failure
from laku.providers.xendit.client import CURRENCY, XenditClient, XenditError, XenditInvoice

log = structlog.get_logger()

WebhookOutcome = Literal["processed", "ignored"]


PaymentProviderUnavailable = problem(
    UpstreamUnavailable, "payment_provider_unavailable", "The payment provider is unavailable"
)
PaymentRejectedByProvider = problem(
    InvalidInput, "payment_rejected_by_provider", "The payment provider refused the payment"
)
PaymentAlreadyPaid = problem(Conflict, "payment_already_paid", "The payment has been paid")
PaymentInProgress = problem(Conflict, "payment_in_progress", "The payment is still being created")
PaymentVoided = problem(Conflict, "payment_voided", "The payment for this reference was given up")


def _not_found() -> NotFound:
    return NotFound("No such payment", code="payment_not_found")


def _provider_error(exc: XenditError) -> UpstreamUnavailable | InvalidInput:
    return provider_failure(
        exc, refused=PaymentRejectedByProvider, unavailable=PaymentProviderUnavailable
    )


@dataclass(frozen=True)
class ReferenceExpiry:
    reference: str
    status: Literal["void", "expired", "failed"]
    payment: Payment | None


@dataclass(frozen=True)
class CreatedPayment:
    payment: Payment
    created: bool  # False: the reference already had this payment


class Payments:
    """The operations that call Xendit between transactions. `on_commit` is called after a
    transaction that enqueued outbox rows (to deliver them now rather than at the next poll)."""

    def __init__(
        self,
        db: Database,
        xendit: XenditClient,
        *,
        default_invoice_duration_seconds: int,
        on_commit: Callable[[], None],
    ):
        self._db = db
        self._xendit = xendit
        self._default_duration = default_invoice_duration_seconds
        self._on_commit = on_commit

    async def create(self, request: PaymentCreate) -> CreatedPayment:
        """The row is committed before the invoice is asked for, so its payment code (the
        invoice's external_id) is on record whatever happens to this process meanwhile; if
        Xendit fails the row is marked failed, and a retry with the reference takes it over."""
        duration = invoice_duration_seconds(request.expires_at, self._default_duration)
        payment, needs_invoice = await self._claim(request, duration)
        if not needs_invoice:
            return CreatedPayment(payment, created=False)
        try:
            invoice = await self._xendit.create_invoice(
                external_id=payment.payment_code,
                amount=payment.amount,
                description=payment.description,
                payer_email=payment.payer_email,
                invoice_duration_seconds=duration,
            )
        except XenditError as exc:
            log.warning(
                "invoice_creation_failed", payment_code=payment.payment_code, error=str(exc)
            )
            await self._mark_failed(payment.id)
            raise _provider_error(exc) from exc
        return CreatedPayment(await self._attach_invoice(payment.id, invoice), created=True)

    async def _claim(self, request: PaymentCreate, duration: int) -> tuple[Payment, bool]:
        """The reference's payment, and whether it still needs its invoice from this call."""
        details = {
            "user_id": request.user_id,
            "amount": request.amount,
            "description": request.description,
            "payer_email": request.payer_email,
            "status": PaymentStatus.PENDING.value,
            "escrow_status": EscrowStatus.NONE.value,
            "expires_at": func.now() + timedelta(seconds=duration),
        }
        async with self._db.sessions.begin() as session:
            await _lock_reference(session, request.reference)
            if await session.get(VoidedReference, request.reference) is not None:
                raise PaymentVoided(
                    "The payment for this reference was given up before it was made"
                )
            inserted = await session.scalar(
                insert(Payment)
                .values(
                    id=uuid.uuid4(),
                    payment_code=new_payment_code(),
                    reference=request.reference,
                    **details,
                )
                .on_conflict_do_nothing(index_elements=[Payment.reference])
                .returning(Payment)
            )
            if inserted is not None:
                return inserted, True
            taken_over = await session.scalar(
                update(Payment)
                .where(
                    Payment.reference == request.reference,
                    Payment.xendit_invoice_id.is_(None),
                    or_(
                        Payment.status == PaymentStatus.FAILED.value,
                        Payment.updated_at < func.now() - ABANDONED_AFTER,
                    ),
                )
                .values(**details)
                .returning(Payment)
                .execution_options(synchronize_session=False)  # a new session holds no payment
            )
            if taken_over is not None:
                return taken_over, True
            existing = await session.scalar(
                select(Payment).where(Payment.reference == request.reference)
            )
        if existing is None or existing.xendit_invoice_id is None:
            raise PaymentInProgress(
                "Another request is creating the payment for this reference", retry_after=1
            )
        return existing, False

    async def _mark_failed(self, payment_id: uuid.UUID) -> None:
        async with self._db.sessions.begin() as session:
            await session.execute(
                update(Payment)
                .where(Payment.id == payment_id, Payment.xendit_invoice_id.is_(None))
                .values(status=PaymentStatus.FAILED.value)
            )

    async def _attach_invoice(self, payment_id: uuid.UUID, invoice: XenditInvoice) -> Payment:
        async with self._db.sessions.begin() as session:
            payment = await session.scalar(
                update(Payment)
                .where(Payment.id == payment_id, Payment.xendit_invoice_id.is_(None))
                .values(
                    xendit_invoice_id=invoice.id,
                    invoice_url=invoice.invoice_url,
                    expires_at=invoice.expiry_date,
                )
                .returning(Payment)
                .execution_options(synchronize_session=False)  # a new session holds no payment
            )
        if payment is None:  # taken over as abandoned: only if this call outlived ABANDONED_AFTER
            log.error("invoice_orphaned", payment_id=str(payment_id), invoice_id=invoice.id)
            raise PaymentInProgress("The payment was taken over by a retry", retry_after=1)
        return payment

    async def apply_callback(self, callback: XenditInvoiceCallback) -> WebhookOutcome:
        """Xendit's invoice webhook, taken as a hint: the payment's invoice is read back from
        Xendit and only what Xendit says moves the payment; the callback's own status, amount
        and paid_at are never used. Callbacks that name no payment of ours, another invoice, or
        an invoice Xendit does not show paid or expired are acknowledged and ignored (answering
        an error would only make Xendit repeat them). Xendit unreachable answers 503, so that
        Xendit sends the callback again."""
        if callback.status not in ACTED_ON_INVOICE_STATUSES:
            log.info("webhook_status_ignored", status=callback.status)
            return "ignored"
        async with self._db.sessions() as session:
            payment = await session.scalar(
                select(Payment).where(Payment.payment_code == callback.external_id)
            )
        if payment is None:
            log.warning("webhook_for_unknown_payment", external_id=callback.external_id)
            return "ignored"
        if payment.xendit_invoice_id is None:
            if payment.status == PaymentStatus.PENDING:
                # The invoice exists but is not recorded yet: an error makes Xendit come back.
                raise PaymentInProgress("The payment's invoice is being recorded", retry_after=1)
            log.warning("webhook_for_uninvoiced_payment", payment_code=payment.payment_code)
            return "ignored"
        if callback.id is not None and callback.id != payment.xendit_invoice_id:
            # Another invoice (from a creation that failed half way, whose URL was never handed
            # out), or a forgery.
            log.warning(
                "webhook_for_other_invoice",
                payment_code=payment.payment_code,
                invoice_id=callback.id,
                expected_invoice_id=payment.xendit_invoice_id,
            )
            return "ignored"
        invoice = await self._read_invoice(payment.xendit_invoice_id)
        if callback.status != invoice.status:
            # A forgery, or a callback overtaken by events: what Xendit shows decides.
            log.warning(
                "webhook_status_not_confirmed",
                payment_code=payment.payment_code,
                reported=callback.status,
                xendit_status=invoice.status,
            )
        outcome = await self._settle_by_invoice(payment.id, invoice, webhook=True)
        return "processed" if outcome is not None else "ignored"

    async def settle_overdue(self, *, batch_size: int = 100) -> int:
        """Read back from Xendit every pending payment past its expiry and settle it by what
        Xendit says (EXPIRED: expired, PAID: paid, each reported as its callback would be):
        Xendit does not always send the EXPIRED callback, and a callback may have been lost.
        Returns how many payments moved. Xendit unavailable stops the run (tried next time)."""
        moved = 0
        after: tuple[datetime, uuid.UUID] | None = None
        while True:
            query = (
                select(Payment.id, Payment.expires_at, Payment.xendit_invoice_id)
                .where(
                    Payment.status == PaymentStatus.PENDING.value,
                    Payment.xendit_invoice_id.is_not(None),
                    Payment.expires_at < func.now(),
                )
                .order_by(Payment.expires_at, Payment.id)
                .limit(batch_size)
            )
            if after is not None:
                query = query.where(tuple_(Payment.expires_at, Payment.id) > after)
            async with self._db.sessions() as session:
                overdue = (await session.execute(query)).all()
            for payment_id, _, invoice_id in overdue:
                try:
                    invoice = await self._xendit.get_invoice(invoice_id)
                except XenditError as exc:
                    if exc.status is None or exc.status >= 500:
                        raise  # Xendit is unavailable: the next run tries them all again
                    # Refused for this invoice alone: the others are not held up behind it.
                    log.error("overdue_invoice_unreadable", invoice_id=invoice_id, error=str(exc))
                    continue
                if await self._settle_by_invoice(payment_id, invoice, webhook=False):
                    moved += 1
            if len(overdue) < batch_size:
                return moved
            after = (overdue[-1].expires_at, overdue[-1].id)

    async def _read_invoice(self, invoice_id: str) -> XenditInvoice:
        try:
            return await self._xendit.get_invoice(invoice_id)
        except XenditError as exc:
            log.warning("invoice_read_back_failed", invoice_id=invoice_id, error=str(exc))
            raise PaymentProviderUnavailable(
                f"The invoice could not be read back from Xendit: {exc.message}", retry_after=5
            ) from exc

    async def _settle_by_invoice(
        self, payment_id: uuid.UUID, invoice: XenditInvoice, *, webhook: bool
    ) -> bool | None:
        """Move the payment as the invoice Xendit showed says, if that invoice is the payment's
        own in every detail: True when it moved, False when it was there already, None when
        Xendit shows the invoice still pending or the invoice is not the payment's."""
        async with self._db.sessions.begin() as session:
            payment = await _locked(session, payment_id)
            if not _matches(payment, invoice):
                return None
            if invoice.status not in ACTED_ON_INVOICE_STATUSES:
                return None  # still PENDING at Xendit: nothing happened yet
            if webhook:
                payment.last_webhook_at = datetime.now(UTC)
            changed = await _follow_invoice(session, payment, invoice.status, invoice.paid_at)
        if changed:
            self._on_commit()
        return changed

    async def expire(self, payment_id: uuid.UUID) -> Payment:
        """Close the invoice at Xendit, then record it expired; already expired (or never
        invoiced because its creation failed) is returned as it is."""
        async with self._db.sessions() as session:
            payment = await session.get(Payment, payment_id)
        if payment is None:
            raise _not_found()
        if payment.status in (PaymentStatus.EXPIRED, PaymentStatus.FAILED):
            return payment
        if payment.status != PaymentStatus.PENDING:
            raise PaymentAlreadyPaid(f"Payment {payment.payment_code} has been paid")
        if payment.xendit_invoice_id is None:
            raise PaymentInProgress("The payment's invoice is being created", retry_after=1)
        invoice = await self._expire_invoice(payment.xendit_invoice_id)
        async with self._db.sessions.begin() as session:
            payment = await _locked(session, payment_id)
            changed = _matches(payment, invoice) and await _follow_invoice(
                session, payment, invoice.status, invoice.paid_at
            )
        if changed:
            self._on_commit()
        if payment.status not in (PaymentStatus.PENDING, PaymentStatus.EXPIRED):
            raise PaymentAlreadyPaid(f"Payment {payment.payment_code} has been paid")
        return payment

    async def expire_by_reference(self, reference: str) -> ReferenceExpiry:
        """The caller gave up on the payment for `reference` (its join failed or timed out),
        whether or not it was made. None yet: the reference is voided, so a creation landing
        later is refused. One whose creation failed or was abandoned is voided too (no retry
        takes it over). One being created answers `payment_in_progress` (ask again); one with
        its invoice is expired like `expire`; a paid one raises `payment_already_paid`."""
        async with self._db.sessions.begin() as session:
            await _lock_reference(session, reference)
            payment = await session.scalar(
                select(Payment).where(Payment.reference == reference).with_for_update()
            )
            if payment is None or payment.status == PaymentStatus.FAILED:
                await _void(session, reference)
                return ReferenceExpiry(reference, "void" if payment is None else "failed", payment)
            if payment.xendit_invoice_id is None and payment.status == PaymentStatus.PENDING:
                abandoned = await session.scalar(
                    select(Payment.updated_at < func.now() - ABANDONED_AFTER).where(
                        Payment.id == payment.id
                    )
                )
                if not abandoned:
                    raise PaymentInProgress("The payment's invoice is being created", retry_after=1)
                payment.status = PaymentStatus.FAILED.value
                await _void(session, reference)
                return ReferenceExpiry(reference, "failed", payment)
        expired = await self.expire(payment.id)
        return ReferenceExpiry(reference, "expired", expired)

    async def close_invoice_of_expired(self, payment_id: uuid.UUID, invoice_id: str) -> None:
        """Expire at Xendit the invoice of a payment recorded expired in bulk (the outbox's
        delivery; Xendit unavailable raises, to be tried again). If the buyer paid before the
        invoice closed, Xendit has the money: the payment is recorded paid after all, held in
        escrow and reported to group-buying as paid (which refunds a cancelled participant)."""
        invoice = await self._expire_invoice(invoice_id)
        if invoice.status not in PAID_INVOICE_STATUSES:
            return
        async with self._db.sessions.begin() as session:
            payment = await _locked(session, payment_id)
            if payment.status != PaymentStatus.EXPIRED:
                return  # already recorded paid by an earlier delivery
            if not _matches(payment, invoice):
                return
            log.warning("paid_before_bulk_expiry", payment_code=payment.payment_code)
            payment.status = PaymentStatus.PAID.value
            payment.escrow_status = EscrowStatus.HELD.value
            payment.paid_at = invoice.paid_at or datetime.now(UTC)
            payment.expired_at = None
            await _report(session, payment, PaymentEventStatus.PAID, payment.paid_at)
        self._on_commit()

    async def _expire_invoice(self, invoice_id: str) -> XenditInvoice:
        try:
            return await self._xendit.expire_invoice(invoice_id)
        except XenditError as exc:
            if not exc.refuses_the_request:
                raise _provider_error(exc) from exc
            refusal = exc
        # Xendit refuses to expire an invoice that is no longer pending (the buyer may have
        # paid a moment ago): what it became decides the payment.
        try:
            return await self._xendit.get_invoice(invoice_id)
        except XenditError as exc:
            raise PaymentProviderUnavailable(
                f"Xendit refused to expire the invoice ({refusal.message}) and could not be read"
            ) from exc


async def _lock_reference(session: AsyncSession, reference: str) -> None:
    """Creating a reference's payment and giving it up take turns (until the transaction
    ends), so a creation never slips past its voiding."""
    await session.execute(select(func.pg_advisory_xact_lock(func.hashtextextended(reference, 0))))


async def _void(session: AsyncSession, reference: str) -> None:
    await session.execute(
        insert(VoidedReference).values(reference=reference).on_conflict_do_nothing()
    )


async def _locked(session: AsyncSession, payment_id: uuid.UUID) -> Payment:
    return found(
        await session.scalar(select(Payment).where(Payment.id == payment_id).with_for_update()),
        _not_found(),
    )


def _invoice_mismatch(payment: Payment, invoice: XenditInvoice) -> str | None:
    """Why the invoice Xendit showed is not this payment's, or None when it is."""
    if invoice.id != payment.xendit_invoice_id:
        return f"invoice id {invoice.id} is not the payment's {payment.xendit_invoice_id}"
    if invoice.external_id != payment.payment_code:
        return f"external_id {invoice.external_id} is not the payment code"
    if invoice.currency != CURRENCY:
        return f"currency {invoice.currency} is not {CURRENCY}"
    if invoice.amount != payment.amount:
        return f"amount {invoice.amount} is not the payment's {payment.amount}"
    if invoice.paid_amount is not None and invoice.paid_amount != payment.amount:
        return f"paid amount {invoice.paid_amount} is not the payment's {payment.amount}"
    return None


def _matches(payment: Payment, invoice: XenditInvoice) -> bool:
    if mismatch := _invoice_mismatch(payment, invoice):
        log.error(
            "invoice_does_not_match_payment",
            payment_code=payment.payment_code,
            invoice_id=invoice.id,
            reason=mismatch,
        )
        return False
    return True


async def _follow_invoice(
    session: AsyncSession, payment: Payment, invoice_status: str, paid_at: datetime | None
) -> bool:
    """Move a locked pending payment as its invoice's status says and enqueue the report;
    True when it moved. Anything else (duplicate, late or unknown status) changes nothing."""
    now = datetime.now(UTC)
    if invoice_status in PAID_INVOICE_STATUSES:
        if payment.status != PaymentStatus.PENDING:
            if payment.status == PaymentStatus.EXPIRED:
                # Xendit cannot take payment on an expired invoice; worth a look if it claims so,
                # unless the payment was expired in bulk before its invoice was closed (then the
                # closing asks Xendit and records the payment as paid).
                log.error("paid_after_expiry_ignored", payment_code=payment.payment_code)
            return False
        payment.status = PaymentStatus.PAID.value
        payment.escrow_status = EscrowStatus.HELD.value
        payment.paid_at = paid_at or now
        event = PaymentEventStatus.PAID
        occurred_at = payment.paid_at
    elif invoice_status == EXPIRED_INVOICE_STATUS:
        if payment.status != PaymentStatus.PENDING:
            return False  # already expired, or paid before the invoice ran out
        payment.status = PaymentStatus.EXPIRED.value
        payment.expired_at = now
        event = PaymentEventStatus.EXPIRED
        occurred_at = now
    else:
        return False
    log.info("payment_moved", payment_code=payment.payment_code, status=payment.status)
    await _report(session, payment, event, occurred_at)
    return True


async def _report(
    session: AsyncSession, payment: Payment, event: PaymentEventStatus, occurred_at: datetime
) -> None:
    """Enqueue the payment's move for group-buying, if it pays for a participant."""
    if payment.reference.startswith(REPORTED_REFERENCE_PREFIX):
        report = PaymentEvent(
            reference=payment.reference,
            payment_id=payment.id,
            status=event,
            occurred_at=occurred_at,
        )
        await enqueue(
            session, outbox, REPORT_PAYMENT_EVENT, report.model_dump(mode="json", by_alias=True)
        )


async def settle_overdue_every(payments: Payments, interval_seconds: float) -> None:
    """`settle_overdue` every `interval_seconds`, in the background for as long as the process
    runs. Other processes may run it too: each payment moves once, under its row lock."""
    while True:
        await asyncio.sleep(interval_seconds)
        try:
            moved = await payments.settle_overdue()
        except Exception:
            log.exception("overdue_payment_sweep_failed")
        else:
            if moved:
                log.info("overdue_payments_settled", moved=moved)


# Reading ------------------------------------------------------------------------------------


async def get_payment(
    session: AsyncSession, payment_id: uuid.UUID, principal: Principal
) -> Payment:
    """Visible to the buyer who pays it, admins and services; to anyone else it does not
    exist (a 403 would confirm the id)."""
    payment = await session.get(Payment, payment_id)
    if payment is None or not (
        principal.is_privileged or str(payment.user_id) == principal.subject
    ):
        raise _not_found()
    return payment


async def get_by_code(session: AsyncSession, payment_code: str) -> Payment:
    return found(
        await session.scalar(select(Payment).where(Payment.payment_code == payment_code)),
        _not_found(),
    )


async def list_payments(
    session: AsyncSession,
    *,
    user_id: uuid.UUID | None,
    status: PaymentStatus | None,
    limit: int,
    offset: int,
) -> tuple[Sequence[Payment], int]:
    """Newest first."""
    query: Select[tuple[Payment]] = select(Payment)
    if user_id is not None:
        query = query.where(Payment.user_id == user_id)
    if status is not None:
        query = query.where(Payment.status == status.value)
    return await page(
        session, query, Payment.created_at.desc(), Payment.id.desc(), limit=limit, offset=offset
    )
