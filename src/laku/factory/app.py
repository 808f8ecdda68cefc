from fastapi import FastAPI

from laku.auth.client import AuthClient
from laku.core.app import create_service_app
from laku.core.services import service_url
from laku.factory.models import idempotency_keys
from laku.factory.routes import router


async def _startup(app: FastAPI) -> None:
    app.state.auth_client = AuthClient(
        service_url("auth", app.state.settings), app.state.http, app.state.service_tokens
    )


def create_app() -> FastAPI:
    return create_service_app(
        "factory", routers=[router], idempotency_keys=idempotency_keys, startup=_startup
    )
