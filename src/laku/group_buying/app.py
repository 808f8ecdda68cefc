from fastapi import FastAPI

from laku.core.app import create_service_app
from laku.core.services import service_url
from laku.group_buying.models import idempotency_keys
from laku.group_buying.routes import router
from laku.product.client import ProductClient


async def _startup(app: FastAPI) -> None:
    # A bundle composition names a product and its variants; product-service is asked.
    app.state.product_client = ProductClient(
        service_url("product", app.state.settings), app.state.http, app.state.service_tokens
    )


def create_app() -> FastAPI:
    return create_service_app(
        "group-buying", routers=[router], idempotency_keys=idempotency_keys, startup=_startup
    )
