"""Typed client other services use to call product-service."""

import uuid

from laku.core.http import ServiceClient
from laku.product.schemas import ProductDetailOut


class ProductClient(ServiceClient):
    async def get_product(self, product_id: uuid.UUID) -> ProductDetailOut | None:
        """The product in any status, with variants, images and cost price (a service sees
        everything), or None when it does not exist; any other failure raises."""
        return await self.get_or_none(f"/api/products/{product_id}", ProductDetailOut)
