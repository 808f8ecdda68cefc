"""The platform's audit (`laku audit`, settlement-service's `GET /api/admin/audit`): the money
and stock invariants of design 15, each with its figures and the first few rows that break it.

No service reads another's schema. Each service audits what it owns behind its own
`GET /api/admin/audit`; the checks that span services are here, over the services' clients:
group-buying's live participants are read a page at a time, and for each page the
warehouse's reservations and payment-service's payments in the same range of references (keyset
pages in byte order), so a platform of 100,000 participants takes a few dozen requests, not one
per participant. The refunds and their wallet credits are compared the same way.

A change the platform is still carrying out (a join between its steps, a payment whose event is
on its way to group-buying, a release waiting in an outbox) looks like a violation for a
moment: rows changed within `grace` of the audit are counted as in flight, not judged.
"""

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import httpx

from laku.core.audit import (
    AUDIT_PAGE_SIZE,
    MAX_AUDIT_PAGE_SIZE,
    AuditOut,
    InvariantOut,
    audit_out,
    invariant,
)
from laku.core.http import TokenSource
from laku.core.services import service_url
from laku.core.settings import Settings
from laku.group_buying.client import AuditParticipantOut, GroupBuyingClient, ParticipantStatus
from laku.payment.client import AuditPaymentOut, EscrowStatus, PaymentClient, PaymentStatus
from laku.settlement.client import SettlementClient
from laku.wallet.client import AuditCreditOut, WalletClient
from laku.warehouse.client import AuditReservationOut, WarehouseClient

Row = TypeVar("Row")

# Every participant's hold and payment carry "participant:<id>"; ";" follows ":" in byte
# order, so (PARTICIPANT, PARTICIPANT_END] holds every such reference.
PARTICIPANT = "participant:"
PARTICIPANT_END = "participant;"
# A refund's wallet credit carries this key (payment-service's `credit_refunds`).
REFUND_CREDIT_KEY = "refund:"
DEFAULT_GRACE = timedelta(minutes=2)
# Each settlement is one call to payment-service; a page's calls go together.
SETTLEMENTS_PAGE_SIZE = 50
# Audit reads scan whole tables: they may take longer than an ordinary call.
AUDIT_TIMEOUT_SECONDS = 120.0


@dataclass(frozen=True)
class AuditClients:
    group_buying: GroupBuyingClient
    warehouse: WarehouseClient
    payment: PaymentClient
    wallet: WalletClient
    settlement: SettlementClient

    @classmethod
    def connect(
        cls, settings: Settings, http: httpx.AsyncClient, tokens: TokenSource
    ) -> "AuditClients":
        return cls(
            group_buying=GroupBuyingClient(service_url("group-buying", settings), http, tokens),
            warehouse=WarehouseClient(service_url("warehouse", settings), http, tokens),
            payment=PaymentClient(service_url("payment", settings), http, tokens),
            wallet=WalletClient(service_url("wallet", settings), http, tokens),
            settlement=SettlementClient(service_url("settlement", settings), http, tokens),
        )


async def run_audit(clients: AuditClients, grace: timedelta = DEFAULT_GRACE) -> AuditOut:
    """Every service's own invariants, then the ones across services."""
    cutoff = datetime.now(UTC) - grace
    owned = await asyncio.gather(
        clients.group_buying.audit(),
        clients.warehouse.audit(),
        clients.payment.audit(),
        clients.wallet.audit(),
        clients.settlement.audit(),
    )
    invariants = [item for report in owned for item in report.invariants]
    invariants += await participants_have_holds_and_payments(clients, cutoff)
    invariants.append(await refund_credits_trace_to_refunds(clients))
    invariants.append(await settlements_match_released_escrow(clients))
    return audit_out(invariants)


async def _in_range(
    fetch: Callable[[str | None, str | None, int], Awaitable[list[Row]]],
    key: Callable[[Row], str],
    lower: str | None,
    upper: str | None,
) -> list[Row]:
    """Every row whose key is in (lower, upper], a page at a time."""
    rows: list[Row] = []
    after = lower
    while True:
        page = await fetch(after, upper, MAX_AUDIT_PAGE_SIZE)
        rows += page
        if len(page) < MAX_AUDIT_PAGE_SIZE:
            return rows
        after = key(page[-1])


# Participants, their holds and their payments -------------------------------------------------


@dataclass(frozen=True)
class _ParticipantRange:
    """Participants with references in (lower, upper] (the live ones, and any other changed
    within the grace), and what the warehouse and payment-service hold under any reference in
    that range."""

    participants: list[AuditParticipantOut]
    holds: dict[str, AuditReservationOut]
    payments: dict[str, AuditPaymentOut]


async def _participant_ranges(
    clients: AuditClients, changed_since: datetime
) -> AsyncIterator[_ParticipantRange]:
    after: uuid.UUID | None = None
    lower = PARTICIPANT
    while True:
        page = await clients.group_buying.audit_participants(after, changed_since)
        last = len(page) < AUDIT_PAGE_SIZE
        upper = PARTICIPANT_END if last else page[-1].reference
        holds, payments = await asyncio.gather(
            _in_range(clients.warehouse.audit_reservations, _reference, lower, upper),
            _in_range(clients.payment.audit_payments, _reference, lower, upper),
        )
        yield _ParticipantRange(
            page, {h.reference: h for h in holds}, {p.reference: p for p in payments}
        )
        if last:
            return
        after, lower = page[-1].id, upper


def _reference(row: AuditReservationOut | AuditPaymentOut) -> str:
    return row.reference


def _recent(
    cutoff: datetime, *rows: AuditParticipantOut | AuditReservationOut | AuditPaymentOut | None
) -> bool:
    return any(row is not None and row.updated_at > cutoff for row in rows)


def hold_problem(participant: AuditParticipantOut, hold: AuditReservationOut | None) -> str | None:
    """A participant pending payment holds its stock (`reserved`); a paid one's stock is held
    or taken out of stock (`deducted`), never released; either way, its own quantity."""
    if hold is None:
        return "no reservation"
    allowed = (
        ("reserved",)
        if participant.status == ParticipantStatus.PENDING_PAYMENT
        else (
            "reserved",
            "deducted",
        )
    )
    if hold.status not in allowed or hold.quantity != participant.quantity:
        return f"reservation {hold.status}, {hold.quantity} units for {participant.quantity}"
    return None


def payment_problem(
    participant: AuditParticipantOut, payment: AuditPaymentOut | None
) -> str | None:
    """A participant pending payment has a pending payment of its total; a paid one a paid
    payment (refunded in whole only when its order was cancelled after the release)."""
    if payment is None:
        return "no payment"
    if participant.status == ParticipantStatus.PENDING_PAYMENT:
        allowed = (PaymentStatus.PENDING,)
    else:
        allowed = (PaymentStatus.PAID, PaymentStatus.REFUNDED)
    if payment.status not in allowed or payment.amount != participant.total_price:
        return (
            f"payment {payment.id} {payment.status}, {payment.amount} for {participant.total_price}"
        )
    return None


async def participants_have_holds_and_payments(
    clients: AuditClients, cutoff: datetime
) -> list[InvariantOut]:
    """Every live participant's hold in the warehouse and payment in payment-service (design
    15), and no hold or escrow left behind by a participant that is no longer live."""
    hold_offenders: list[str] = []
    payment_offenders: list[str] = []
    figures = {"participants": 0, "pendingPayment": 0, "paid": 0, "inFlight": 0}
    held = {"holds": 0, "heldUnits": 0}
    escrow = {"paymentsHeld": 0, "escrowHeld": 0}
    async for part in _participant_ranges(clients, cutoff):
        known = {p.reference for p in part.participants}
        for participant in part.participants:
            if participant.status not in (
                ParticipantStatus.PENDING_PAYMENT,
                ParticipantStatus.PAID,
            ):
                continue  # no longer live, changed within the grace: its hold is on its way
            hold = part.holds.get(participant.reference)
            payment = part.payments.get(participant.reference)
            figures["participants"] += 1
            figures["pendingPayment" if participant.status == "pending_payment" else "paid"] += 1
            if _recent(cutoff, participant, hold, payment):
                figures["inFlight"] += 1
                continue
            if problem := hold_problem(participant, hold):
                hold_offenders.append(f"{participant.id} ({participant.status}: {problem})")
            if problem := payment_problem(participant, payment):
                payment_offenders.append(f"{participant.id} ({participant.status}: {problem})")
        for hold in part.holds.values():
            if hold.status == "reserved":
                held["holds"] += 1
                held["heldUnits"] += hold.quantity
                if hold.reference not in known and not _recent(cutoff, hold):
                    hold_offenders.append(f"{hold.reference} (reserved, no live participant)")
        for payment in part.payments.values():
            if payment.escrow_status == EscrowStatus.HELD:
                escrow["paymentsHeld"] += 1
                escrow["escrowHeld"] += payment.amount
                if payment.reference not in known and not _recent(cutoff, payment):
                    payment_offenders.append(
                        f"{payment.reference} (escrow held, no live participant)"
                    )
    return [
        invariant("participants.hold_in_warehouse", {**figures, **held}, hold_offenders),
        invariant("participants.payment_in_payment", {**figures, **escrow}, payment_offenders),
    ]


# Wallet credits and refunds -------------------------------------------------------------------


def _credit_key(credit: AuditCreditOut) -> str:
    return credit.idempotency_key


async def refund_credits_trace_to_refunds(clients: AuditClients) -> InvariantOut:
    """Every wallet credit for a refund is payment-service's refund of the same amount to the
    same buyer (its key `refund:<refundId>`), and every refund done has its credit. Withdrawal
    reversals and admin adjustments are the wallet's own (its audit traces the reversals)."""
    offenders: list[str] = []
    figures = {"refunds": 0, "refunded": 0, "pendingRefunds": 0, "credits": 0, "credited": 0}
    after: uuid.UUID | None = None
    lower: str | None = None  # the first range also takes every key below "refund:"
    while True:
        refunds = await clients.payment.audit_refunds(after)
        last = len(refunds) < AUDIT_PAGE_SIZE
        upper = None if last else f"{REFUND_CREDIT_KEY}{refunds[-1].id}"
        credits = {
            credit.idempotency_key: credit
            for credit in await _in_range(
                clients.wallet.audit_refund_credits, _credit_key, lower, upper
            )
        }
        figures["credits"] += len(credits)
        figures["credited"] += sum(credit.amount for credit in credits.values())
        for refund in refunds:
            figures["refunds"] += 1
            figures["refunded"] += refund.amount
            credit = credits.pop(f"{REFUND_CREDIT_KEY}{refund.id}", None)
            if credit is None:
                if refund.status == "pending":
                    figures["pendingRefunds"] += 1  # its credit is on its way (outbox)
                else:
                    offenders.append(
                        f"refund {refund.id} ({refund.status}, {refund.amount}: no credit)"
                    )
            elif (credit.amount, credit.user_id) != (refund.amount, refund.user_id):
                offenders.append(
                    f"refund {refund.id} ({refund.amount} to {refund.user_id}; credited "
                    f"{credit.amount} to {credit.user_id})"
                )
        offenders += [
            f"credit {key} ({credit.reason}, {credit.amount} to {credit.user_id}: no refund)"
            for key, credit in credits.items()
        ]
        if last:
            return invariant("wallet.refund_credits_trace_to_refunds", figures, offenders)
        after, lower = refunds[-1].id, upper


# Settlements ----------------------------------------------------------------------------------


async def settlements_match_released_escrow(clients: AuditClients) -> InvariantOut:
    """Each settlement's total is the escrow payment-service released to its factory in its
    period (paid less refunded) plus the refunds made since that became receivables."""
    offenders: list[str] = []
    figures = {"settlements": 0, "settled": 0, "released": 0, "receivable": 0}
    after: uuid.UUID | None = None
    while True:
        settlements = await clients.settlement.audit_settlements(after, SETTLEMENTS_PAGE_SIZE)
        released = await asyncio.gather(
            *(
                clients.payment.escrow_released(s.factory_id, s.period_start, s.period_end)
                for s in settlements
            )
        )
        for settlement, escrow in zip(settlements, released, strict=True):
            figures["settlements"] += 1
            figures["settled"] += settlement.total_amount
            figures["released"] += escrow.total_amount
            figures["receivable"] += settlement.receivable_amount
            if settlement.total_amount != escrow.total_amount + settlement.receivable_amount:
                offenders.append(
                    f"{settlement.id} (total {settlement.total_amount}, released "
                    f"{escrow.total_amount}, receivable since {settlement.receivable_amount})"
                )
        if len(settlements) < SETTLEMENTS_PAGE_SIZE:
            return invariant("settlement.totals_match_released_escrow", figures, offenders)
        after = settlements[-1].id
