"""Typed client other services use to call factory-service."""

import uuid

from laku.core.http import ServiceCallError, ServiceClient
from laku.factory.schemas import FactoryOut


class FactoryClient(ServiceClient):
    async def get_factory(self, factory_id: uuid.UUID) -> FactoryOut | None:
        """The factory, or None when it does not exist; any other failure raises."""
        try:
            response = await self.request("GET", f"/api/factories/{factory_id}")
        except ServiceCallError as exc:
            if exc.status == 404:
                return None
            raise
        return FactoryOut.model_validate(response.json())
