"""Typed client other services use to read addresses (logistics: destination postal codes)."""

import uuid

from laku.address.schemas import AddressOut
from laku.core.http import ServiceClient


class AddressClient(ServiceClient):
    async def get_address(self, address_id: uuid.UUID) -> AddressOut | None:
        """Any user's address by id; None when there is no such address."""
        return await self.get_or_none(f"/api/addresses/{address_id}", AddressOut)

    async def get_default_address(self, user_id: uuid.UUID) -> AddressOut | None:
        """The user's default address; None when the user has no addresses."""
        return await self.get_or_none(
            "/api/addresses/default", AddressOut, params={"userId": str(user_id)}
        )
