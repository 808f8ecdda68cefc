"""Paying a settlement out through Xendit and following the payout until it settles: the outbox
relay's handler.

The payout's `reference_id` and `Idempotency-key` are derived from the settlement's id and the
attempt (a failed payout retried by an admin is a new attempt), so a request repeated after a
crash, a lost answer or a Xendit outage makes one payout per attempt, and an outbox row left
over from an earlier attempt does nothing. Xendit reports a payout's
outcome only by webhook, to the one URL the account has (wallet-service's, for withdrawals),
so settlement reads its payout back instead: the outbox row raises while the payout is on its
way and is tried again with back-off (1 s, 2 s ... 5 min) until the payout SUCCEEDED or
FAILED. A payout Xendit refuses for what it says (HTTP 400: an unknown account, an amount out
of limits) will never be made, so the settlement's payout fails at once.
"""

import uuid
from typing import Any

import structlog

from laku.core.db import Database
from laku.providers.xendit.client import XenditError
from laku.providers.xendit.payouts import XenditPayout, XenditPayoutClient, channel_code
from laku.settlement import service
from laku.settlement.models import FactorySettlement
from laku.settlement.schemas import SettlementStatus

log = structlog.get_logger()

_REFUSED_FOR_ITS_CONTENT = 400
_SUCCEEDED = "SUCCEEDED"
# Money that did not reach the factory (REVERSED: the bank sent it back).
_NOT_PAID = frozenset({"FAILED", "CANCELLED", "REVERSED"})


class PayoutNotSettled(Exception):
    """The payout is still on its way; the outbox looks at it again later."""


def payout_reference(settlement_id: uuid.UUID, attempt: int = 1) -> str:
    """Not a bare UUID: wallet-service, which receives every payout webhook, takes those for
    its withdrawals' and acknowledges anything else."""
    reference = f"settlement-{settlement_id}"
    return reference if attempt == 1 else f"{reference}-{attempt}"


class SettlementPayouts:
    def __init__(self, db: Database, payouts: XenditPayoutClient):
        self._db = db
        self._payouts = payouts

    async def pay_out(self, _: int, payload: dict[str, Any]) -> None:
        settlement_id = uuid.UUID(payload["settlementId"])
        attempt = int(payload.get("attempt", 1))
        async with self._db.sessions() as session:
            settlement = await session.get(FactorySettlement, settlement_id)
        if (
            settlement is None
            or settlement.status != SettlementStatus.PENDING
            or settlement.payout_attempt != attempt
        ):
            return  # settled by an earlier delivery, or an earlier attempt's row
        if settlement.payout_id is None:
            payout = await self._request(settlement)
            if payout is None:
                return
            async with self._db.sessions() as session:
                await service.record_payout(session, settlement_id, attempt, payout.id)
        else:
            payout = await self._payouts.get_payout(settlement.payout_id)
        await self._follow(settlement_id, attempt, payout)

    async def _request(self, settlement: FactorySettlement) -> XenditPayout | None:
        """The payout (made once per attempt, however often asked), or None when Xendit
        refused it."""
        reference = payout_reference(settlement.id, settlement.payout_attempt)
        try:
            return await self._payouts.create_payout(
                reference_id=reference,
                amount=settlement.net_amount,
                channel_code=channel_code(settlement.bank_code),
                account_holder_name=settlement.account_holder_name,
                account_number=settlement.account_number,
                description=f"Laku settlement {settlement.id}",
                idempotency_key=reference,
            )
        except XenditError as exc:
            if exc.status != _REFUSED_FOR_ITS_CONTENT:
                raise
            log.warning(
                "settlement_payout_refused",
                settlement_id=str(settlement.id),
                error_code=exc.error_code,
                error=exc.message,
            )
            async with self._db.sessions() as session:
                await service.payout_failed(
                    session,
                    settlement.id,
                    settlement.payout_attempt,
                    exc.error_code or "PAYOUT_REFUSED",
                )
            return None

    async def _follow(self, settlement_id: uuid.UUID, attempt: int, payout: XenditPayout) -> None:
        if payout.status == _SUCCEEDED:
            async with self._db.sessions() as session:
                await service.payout_succeeded(session, settlement_id, attempt)
        elif payout.status in _NOT_PAID:
            async with self._db.sessions() as session:
                await service.payout_failed(
                    session, settlement_id, attempt, payout.failure_code or payout.status
                )
        else:
            raise PayoutNotSettled(f"Payout {payout.id} is {payout.status}")
