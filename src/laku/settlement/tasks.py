"""settlement-service's deferred work: the outbox kinds and their handlers.

`pay_out_settlement`: request a settlement's payout (one per attempt) and follow it until it
settles. While the payout is on its way the handler raises `PayoutNotSettled` (a
`RetryLater`), so the row is tried again with back-off; a payout Xendit refuses fails the
settlement's payout at once, and the row is done.
"""

from collections.abc import Mapping

from fastapi import FastAPI

from laku.core.outbox import Handler
from laku.settlement.payouts import SettlementPayouts

PAY_OUT = "pay_out_settlement"


def outbox_handlers(app: FastAPI) -> Mapping[str, Handler]:
    payouts: SettlementPayouts = app.state.settlement_payouts
    return {PAY_OUT: payouts.pay_out}
