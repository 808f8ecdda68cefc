from fastapi import FastAPI

from laku.core.app import create_service_app
from laku.payment.models import idempotency_keys
from laku.payment.routes import router


def create_app() -> FastAPI:
    return create_service_app("payment", routers=[router], idempotency_keys=idempotency_keys)
