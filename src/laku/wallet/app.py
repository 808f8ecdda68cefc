"""wallet-service (port 3010): buyers' wallets, their transactions, withdrawals."""

from fastapi import FastAPI

from laku.core.app import create_service_app
from laku.providers.xendit.payouts import PayoutFlow, XenditPayoutClient
from laku.wallet.models import idempotency_keys, outbox
from laku.wallet.payouts import WithdrawalPayouts
from laku.wallet.routes import audit_router, router
from laku.wallet.tasks import outbox_handlers


async def _startup(app: FastAPI) -> None:
    state = app.state
    state.withdrawal_payouts = WithdrawalPayouts(
        state.db, PayoutFlow(XenditPayoutClient(state.http, state.settings))
    )


def create_app() -> FastAPI:
    return create_service_app(
        "wallet",
        [router, audit_router],
        idempotency_keys,
        startup=_startup,
        outbox=(outbox, outbox_handlers),
    )
