from fastapi import FastAPI

from laku.core.app import create_service_app
from laku.wallet.models import idempotency_keys
from laku.wallet.routes import router


def create_app() -> FastAPI:
    return create_service_app("wallet", routers=[router], idempotency_keys=idempotency_keys)
