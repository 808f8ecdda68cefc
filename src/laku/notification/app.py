from fastapi import FastAPI

from laku.core.app import create_service_app
from laku.notification.models import idempotency_keys
from laku.notification.routes import router


def create_app() -> FastAPI:
    return create_service_app("notification", routers=[router], idempotency_keys=idempotency_keys)
