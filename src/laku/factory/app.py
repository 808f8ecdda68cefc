from fastapi import FastAPI

from laku.core.app import create_service_app
from laku.factory.models import idempotency_keys
from laku.factory.routes import router


def create_app() -> FastAPI:
    return create_service_app("factory", routers=[router], idempotency_keys=idempotency_keys)
