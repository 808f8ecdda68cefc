from fastapi import FastAPI

from laku.core.app import create_service_app, service_client
from laku.factory.client import FactoryClient
from laku.product.images import photo_store
from laku.product.models import idempotency_keys
from laku.product.routes import router


async def _startup(app: FastAPI) -> None:
    # Products name their factory; factory-service is asked whether it exists.
    app.state.factory_client = service_client(app, FactoryClient, "factory")
    app.state.photos = photo_store(app.state.settings)


def create_app() -> FastAPI:
    return create_service_app("product", [router], idempotency_keys, startup=_startup)
