from fastapi import FastAPI

from laku.address.models import idempotency_keys
from laku.address.routes import router
from laku.core.app import create_service_app


def create_app() -> FastAPI:
    return create_service_app("address", [router], idempotency_keys)
