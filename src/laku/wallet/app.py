"""wallet-service (port 3010): buyers' wallets, their transactions, withdrawals."""

from collections.abc import Mapping

from fastapi import FastAPI

from laku.core.app import create_service_app
from laku.core.outbox import Handler
from laku.providers.xendit.payouts import XenditPayoutClient
from laku.wallet.models import idempotency_keys, outbox
from laku.wallet.payouts import WithdrawalPayouts
from laku.wallet.routes import audit_router, router
from laku.wallet.service import REQUEST_PAYOUT


async def _startup(app: FastAPI) -> None:
    state = app.state
    state.withdrawal_payouts = WithdrawalPayouts(
        state.db, XenditPayoutClient(state.http, state.settings)
    )


def _outbox_handlers(app: FastAPI) -> Mapping[str, Handler]:
    return {REQUEST_PAYOUT: app.state.withdrawal_payouts.request_payout}


def create_app() -> FastAPI:
    return create_service_app(
        "wallet",
        routers=[router, audit_router],
        idempotency_keys=idempotency_keys,
        startup=_startup,
        outbox=(outbox, _outbox_handlers),
    )
