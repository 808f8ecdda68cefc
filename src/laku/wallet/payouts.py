"""Requesting a withdrawal's payout from Xendit: the outbox relay's handler.

The withdrawal's id is the payout's `reference_id` and its `Idempotency-key`, so a request
repeated after a crash or a lost answer makes one payout. A payout Xendit refuses for what it
says (HTTP 400: an unknown account, an amount out of limits) will never be made, so the
withdrawal fails and its money goes back; any other error is tried again later.
"""

import uuid
from typing import Any

import structlog

from laku.core.db import Database
from laku.providers.xendit.client import XenditError
from laku.providers.xendit.payouts import XenditPayoutClient, channel_code
from laku.wallet import service
from laku.wallet.models import WalletWithdrawal
from laku.wallet.schemas import WithdrawalStatus

log = structlog.get_logger()

_REFUSED_FOR_ITS_CONTENT = 400


class PayoutRequester:
    def __init__(self, db: Database, payouts: XenditPayoutClient):
        self._db = db
        self._payouts = payouts

    async def request_payout(self, _: int, payload: dict[str, Any]) -> None:
        withdrawal_id = uuid.UUID(payload["withdrawalId"])
        async with self._db.sessions() as session:
            withdrawal = await session.get(WalletWithdrawal, withdrawal_id)
        if (
            withdrawal is None
            or withdrawal.status != WithdrawalStatus.PENDING
            or withdrawal.payout_id is not None
        ):
            return  # requested by an earlier attempt, or already settled by its webhook
        try:
            payout = await self._payouts.create_payout(
                reference_id=str(withdrawal.id),
                amount=withdrawal.amount,
                channel_code=channel_code(withdrawal.bank_code),
                account_holder_name=withdrawal.account_holder_name,
                account_number=withdrawal.account_number,
                description=f"Laku wallet withdrawal {withdrawal.id}",
                idempotency_key=str(withdrawal.id),
            )
        except XenditError as exc:
            if exc.status != _REFUSED_FOR_ITS_CONTENT:
                raise
            log.warning(
                "payout_refused",
                withdrawal_id=str(withdrawal_id),
                error_code=exc.error_code,
                error=exc.message,
            )
            async with self._db.sessions() as session:
                await service.refuse_withdrawal(
                    session, withdrawal_id, exc.error_code or "PAYOUT_REFUSED"
                )
            return
        async with self._db.sessions() as session:
            await service.record_payout_id(session, withdrawal_id, payout.id)
