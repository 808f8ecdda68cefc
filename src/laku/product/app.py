from fastapi import FastAPI

from laku.core.app import create_service_app
from laku.product.models import idempotency_keys
from laku.product.routes import router


def create_app() -> FastAPI:
    return create_service_app("product", routers=[router], idempotency_keys=idempotency_keys)
