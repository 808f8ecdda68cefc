"""settlement-service (port 3013): factories settled for the escrow released to them, less the
platform's fee and what they owe back for refunds made after they were settled, in a
double-entry ledger, and paid out through Xendit."""

from fastapi import FastAPI

from laku.core.app import create_service_app, service_client
from laku.factory.client import FactoryClient
from laku.payment.client import PaymentClient
from laku.providers.xendit.payouts import PayoutFlow, XenditPayoutClient
from laku.settlement.models import idempotency_keys, outbox
from laku.settlement.payouts import SettlementPayouts
from laku.settlement.routes import audit_router, ledger_router, router
from laku.settlement.tasks import outbox_handlers


async def _startup(app: FastAPI) -> None:
    state = app.state
    state.factories = service_client(app, FactoryClient, "factory")
    state.payments = service_client(app, PaymentClient, "payment")
    state.settlement_payouts = SettlementPayouts(
        state.db, PayoutFlow(XenditPayoutClient(state.http, state.settings))
    )


def create_app() -> FastAPI:
    return create_service_app(
        "settlement",
        [router, ledger_router, audit_router],
        idempotency_keys,
        startup=_startup,
        outbox=(outbox, outbox_handlers),
    )
