"""Typed client other services use to call product-service."""

import uuid

from laku.core.http import ServiceClient
from laku.product.schemas import ImageOut, ProductDetailOut


class ProductClient(ServiceClient):
    async def get_product(self, product_id: uuid.UUID) -> ProductDetailOut | None:
        """The product in any status, with variants, images and cost price (a service sees
        everything), or None when it does not exist; any other failure raises."""
        return await self.get_or_none(f"/api/products/{product_id}", ProductDetailOut)

    async def upload_image(
        self, product_id: uuid.UUID | str, data_base64: str, *, idempotency_key: str
    ) -> ImageOut:
        """Add a photo (base64 of a JPEG, PNG, WebP or GIF), stored resized for phones; a file
        that is not an image raises ServiceCallError 422 `not_an_image`."""
        response = await self.request(
            "POST",
            f"/api/products/{product_id}/images/upload",
            json={"dataBase64": data_base64},
            idempotency_key=idempotency_key,
        )
        return ImageOut.model_validate(response.json())
