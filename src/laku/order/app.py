from fastapi import FastAPI

from laku.core.app import create_service_app
from laku.order.models import idempotency_keys
from laku.order.routes import router


def create_app() -> FastAPI:
    return create_service_app("order", routers=[router], idempotency_keys=idempotency_keys)
