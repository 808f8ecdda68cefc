from fastapi import FastAPI

from laku.core.app import create_service_app
from laku.group_buying.models import idempotency_keys
from laku.group_buying.routes import router


def create_app() -> FastAPI:
    return create_service_app("group-buying", routers=[router], idempotency_keys=idempotency_keys)
