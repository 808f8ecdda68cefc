"""wallet-service's deferred work: the outbox kinds and their handlers.

`request_payout`: request a withdrawal's payout and follow it until it settles. While the
payout is on its way the handler raises `PayoutNotSettled` (a `RetryLater`), so the row is
tried again with back-off; a payout Xendit refuses fails the withdrawal and gives the money
back, and the row is done.
"""

from collections.abc import Mapping

from fastapi import FastAPI

from laku.core.outbox import Handler
from laku.wallet.payouts import WithdrawalPayouts

REQUEST_PAYOUT = "request_payout"


def outbox_handlers(app: FastAPI) -> Mapping[str, Handler]:
    payouts: WithdrawalPayouts = app.state.withdrawal_payouts
    return {REQUEST_PAYOUT: payouts.request_payout}
