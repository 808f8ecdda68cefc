from fastapi import FastAPI

from laku.core.app import create_service_app
from laku.warehouse.models import idempotency_keys
from laku.warehouse.routes import router


def create_app() -> FastAPI:
    return create_service_app("warehouse", routers=[router], idempotency_keys=idempotency_keys)
