"""The services, reached through their clients with the signed-in person's own token: every
rule (who may see what, prices, stock) stays in the services."""

import base64
import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from laku.address.client import AddressClient
from laku.auth.client import AuthClient
from laku.core.http import ServiceClient
from laku.core.services import service_url
from laku.core.settings import Settings
from laku.factory.client import FactoryClient
from laku.group_buying.client import GroupBuyingClient
from laku.logistics.client import LogisticsClient
from laku.notification.client import NotificationClient
from laku.order.client import OrderClient
from laku.payment.client import PaymentClient
from laku.product.client import ProductClient
from laku.settlement.client import SettlementClient
from laku.wallet.client import Bank, WalletClient
from laku.warehouse.client import WarehouseClient

_CLIENTS: dict[str, type[ServiceClient]] = {
    "auth": AuthClient,
    "product": ProductClient,
    "factory": FactoryClient,
    "group-buying": GroupBuyingClient,
    "order": OrderClient,
    "payment": PaymentClient,
    "notification": NotificationClient,
    "warehouse": WarehouseClient,
    "wallet": WalletClient,
    "logistics": LogisticsClient,
    "settlement": SettlementClient,
    "address": AddressClient,
}


# The banks a wallet withdrawal or a factory's settlement is paid out to.
BANKS = tuple(bank.value for bank in Bank)


class UserToken:
    """Stands where a service's token source would: the person's own access token."""

    def __init__(self, token: str):
        self._token = token

    async def token(self) -> str:
        return self._token


@dataclass
class Backend:
    """One person's view of the platform for one request (anonymous when `token` is None)."""

    http: httpx.AsyncClient
    settings: Settings
    token: str | None = None

    def client(self, service: str) -> ServiceClient:
        tokens = UserToken(self.token) if self.token else None
        return _CLIENTS[service](service_url(service, self.settings), self.http, tokens)  # type: ignore[arg-type]

    async def get(self, service: str, path: str, **params: Any) -> Any:
        query = {k: v for k, v in params.items() if v not in (None, "")}
        response = await self.client(service).request("GET", path, params=query or None)
        return response.json()

    async def send(
        self, method: str, service: str, path: str, body: Any = None, *, key: str | None = None
    ) -> Any:
        """A write, with the form's own idempotency key so a double submit does it once."""
        response = await self.client(service).request(
            method, path, json=body, idempotency_key=key or uuid.uuid4().hex
        )
        return response.json() if response.content else None

    async def post(self, service: str, path: str, body: Any = None, *, key: str | None = None):
        return await self.send("POST", service, path, body, key=key)

    async def upload_product_image(self, product_id: str, data: bytes) -> dict[str, Any]:
        client = self.client("product")
        assert isinstance(client, ProductClient)
        image = await client.upload_image(
            product_id, base64.b64encode(data).decode(), idempotency_key=uuid.uuid4().hex
        )
        return image.model_dump(mode="json", by_alias=True)
