"""A withdrawal's Xendit payout: requesting it (the outbox relay's handler), following it until
it settles, and taking Xendit's payout webhooks as hints.

The withdrawal's id is the payout's `reference_id` and its `Idempotency-key`, so a request
repeated after a crash or a lost answer makes one payout. A payout Xendit refuses for what it
says (HTTP 400: an unknown account, an amount out of limits) will never be made, so the
withdrawal fails and its money goes back; any other error is tried again later.

Once made, the payout is read back until it settles, as settlement's payouts are: the outbox row
raises while the payout is on its way (ACCEPTED, REQUESTED) and is tried again with back-off, so
a withdrawal settles even if its webhook never comes. A webhook is never believed: it only makes
wallet-service read the payout back from Xendit, check it is the withdrawal's (id, reference,
amount, IDR) and act on the status Xendit shows. That is also how a payout REVERSED after it
succeeded (which comes only by webhook) gives the money back.
"""

import uuid
from typing import Any

import structlog

from laku.core.db import Database
from laku.core.errors import UpstreamUnavailable
from laku.providers.xendit.client import CURRENCY, XenditError
from laku.providers.xendit.payouts import XenditPayout, XenditPayoutClient, channel_code
from laku.wallet import service
from laku.wallet.models import WalletWithdrawal
from laku.wallet.schemas import PayoutWebhook, WithdrawalStatus

log = structlog.get_logger()

_REFUSED_FOR_ITS_CONTENT = 400
_NOT_FOUND = 404


class PayoutNotSettled(Exception):
    """The payout is still on its way; the outbox looks at it again later."""


class PayoutProviderUnavailable(UpstreamUnavailable):
    code = "payout_provider_unavailable"
    title = "The payout provider is unavailable"


class WithdrawalPayouts:
    def __init__(self, db: Database, payouts: XenditPayoutClient):
        self._db = db
        self._payouts = payouts

    async def request_payout(self, _: int, payload: dict[str, Any]) -> None:
        """Request the withdrawal's payout once, then follow it until it settles."""
        withdrawal_id = uuid.UUID(payload["withdrawalId"])
        withdrawal = await self._withdrawal(withdrawal_id)
        if withdrawal is None or withdrawal.status != WithdrawalStatus.PENDING:
            return  # settled by an earlier attempt, or by its webhook
        if withdrawal.payout_id is None:
            payout = await self._request(withdrawal)
            if payout is None:
                return
            async with self._db.sessions() as session:
                await service.record_payout_id(session, withdrawal_id, payout.id)
        else:
            payout = await self._payouts.get_payout(withdrawal.payout_id)
        if mismatch := _payout_mismatch(withdrawal, payout, withdrawal.payout_id or payout.id):
            # Xendit answered with a payout that is not this withdrawal's: someone must look.
            log.error(
                "payout_does_not_match_withdrawal",
                withdrawal_id=str(withdrawal_id),
                payout_id=payout.id,
                reason=mismatch,
            )
            raise PayoutNotSettled(f"Payout {payout.id} is not the withdrawal's: {mismatch}")
        if payout.status not in service.PAYOUT_FINAL:
            raise PayoutNotSettled(f"Payout {payout.id} is {payout.status}")
        async with self._db.sessions() as session:
            await service.follow_payout(
                session,
                withdrawal_id,
                payout_id=payout.id,
                payout_status=payout.status,
                failure_code=payout.failure_code,
            )

    async def _request(self, withdrawal: WalletWithdrawal) -> XenditPayout | None:
        """The payout (made once, however often asked), or None when Xendit refused it."""
        try:
            return await self._payouts.create_payout(
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
                withdrawal_id=str(withdrawal.id),
                error_code=exc.error_code,
                error=exc.message,
            )
            async with self._db.sessions() as session:
                await service.refuse_withdrawal(
                    session, withdrawal.id, exc.error_code or "PAYOUT_REFUSED"
                )
            return None

    async def apply_webhook(self, webhook: PayoutWebhook) -> None:
        """A payout webhook, taken as a hint: the payout is read back from Xendit and, if it is
        the withdrawal's, the withdrawal follows the status Xendit shows (whatever the event
        said). Payouts that are not withdrawals' (settlements', or made outside Laku) and
        payouts that do not match are acknowledged and change nothing. Xendit unreachable
        answers 503, so Xendit sends the webhook again."""
        reported = webhook.data
        try:
            withdrawal_id = uuid.UUID(reported.reference_id)
        except ValueError:
            withdrawal_id = None
        withdrawal = await self._withdrawal(withdrawal_id) if withdrawal_id else None
        if withdrawal is None:
            log.info("payout_webhook_unknown_reference", reference_id=reported.reference_id)
            return
        expected_id = withdrawal.payout_id or reported.id
        if reported.id != expected_id:
            log.warning(
                "payout_webhook_for_other_payout",
                withdrawal_id=str(withdrawal.id),
                payout_id=reported.id,
                expected_payout_id=expected_id,
            )
            return
        try:
            payout = await self._payouts.get_payout(expected_id)
        except XenditError as exc:
            if exc.status == _NOT_FOUND:  # no such payout at Xendit: nothing to follow
                log.warning("payout_webhook_for_unknown_payout", payout_id=expected_id)
                return
            log.warning("payout_read_back_failed", payout_id=expected_id, error=str(exc))
            raise PayoutProviderUnavailable(
                f"The payout could not be read back from Xendit: {exc.message}", retry_after=5
            ) from exc
        if mismatch := _payout_mismatch(withdrawal, payout, expected_id):
            log.error(
                "payout_does_not_match_withdrawal",
                withdrawal_id=str(withdrawal.id),
                payout_id=payout.id,
                reason=mismatch,
            )
            return
        if payout.status not in service.PAYOUT_FINAL:
            log.warning(
                "payout_webhook_not_confirmed",
                withdrawal_id=str(withdrawal.id),
                payout_id=payout.id,
                reported_event=webhook.event,
                xendit_status=payout.status,
            )
            return
        async with self._db.sessions() as session:
            await service.follow_payout(
                session,
                withdrawal.id,
                payout_id=payout.id,
                payout_status=payout.status,
                failure_code=payout.failure_code,
            )

    async def _withdrawal(self, withdrawal_id: uuid.UUID) -> WalletWithdrawal | None:
        async with self._db.sessions() as session:
            return await session.get(WalletWithdrawal, withdrawal_id)


def _payout_mismatch(
    withdrawal: WalletWithdrawal, payout: XenditPayout, payout_id: str
) -> str | None:
    """Why the payout Xendit showed is not the withdrawal's, or None when it is."""
    if payout.id != payout_id:
        return f"payout id {payout.id} is not {payout_id}"
    if payout.reference_id != str(withdrawal.id):
        return f"reference_id {payout.reference_id} is not the withdrawal's"
    if payout.currency != CURRENCY:
        return f"currency {payout.currency} is not {CURRENCY}"
    if payout.amount != withdrawal.amount:
        return f"amount {payout.amount} is not the withdrawal's {withdrawal.amount}"
    return None
