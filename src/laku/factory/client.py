"""Typed client other services use to call factory-service."""

import uuid

from laku.core.http import ServiceClient
from laku.factory.schemas import FactoryOut


class FactoryClient(ServiceClient):
    async def get_factory(self, factory_id: uuid.UUID) -> FactoryOut | None:
        """The factory, or None when it does not exist; any other failure raises."""
        return await self.get_or_none(f"/api/factories/{factory_id}", FactoryOut)
