from fastapi import FastAPI

from laku.auth.client import AuthClient
from laku.core.app import create_service_app, service_client
from laku.factory.models import idempotency_keys
from laku.factory.routes import router


async def _startup(app: FastAPI) -> None:
    app.state.auth_client = service_client(app, AuthClient, "auth")


def create_app() -> FastAPI:
    return create_service_app("factory", [router], idempotency_keys, startup=_startup)
