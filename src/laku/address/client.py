"""Typed client other services use to read addresses (logistics: destination postal codes)."""

import uuid

from laku.address.schemas import AddressOut
from laku.core.http import ServiceCallError, ServiceClient


class AddressClient(ServiceClient):
    async def get_address(self, address_id: uuid.UUID) -> AddressOut | None:
        """Any user's address by id; None when there is no such address."""
        return await self._address_or_none(f"/api/addresses/{address_id}")

    async def get_default_address(self, user_id: uuid.UUID) -> AddressOut | None:
        """The user's default address; None when the user has no addresses."""
        return await self._address_or_none(
            "/api/addresses/default", params={"userId": str(user_id)}
        )

    async def _address_or_none(
        self, path: str, params: dict[str, str] | None = None
    ) -> AddressOut | None:
        try:
            response = await self.request("GET", path, params=params)
        except ServiceCallError as exc:
            if exc.status == 404:
                return None
            raise
        return AddressOut.model_validate(response.json())
