import uuid
from datetime import datetime
from typing import Annotated

from pydantic import Field, HttpUrl, RootModel, UrlConstraints

from laku.core.money import Rupiah, SignedRupiah
from laku.core.schemas import MultilineText, PartialUpdate, Text, WireModel
from laku.product.rules import ProductStatus

Name = Text(200)
Description = MultilineText(5000, min_length=0)
Sku = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
Slug = Annotated[str, Field(pattern=r"^[a-z0-9]+(-[a-z0-9]+)*$", max_length=200)]
VariantName = Text(100)
# Strict like money: "100" or 100.0 are refused rather than coerced.
Moq = Annotated[int, Field(strict=True, gt=0, le=1_000_000)]
GroupDurationHours = Annotated[int, Field(strict=True, gt=0, le=24 * 365)]
SortOrder = Annotated[int, Field(strict=True, ge=0, le=10_000)]
MAX_VARIANTS_PER_REQUEST = 100


class CategoryCreate(WireModel):
    name: Name
    slug: Slug | None = None
    parent_id: uuid.UUID | None = None


class CategoryOut(WireModel):
    id: uuid.UUID
    name: str
    slug: str
    parent_id: uuid.UUID | None
    created_at: datetime


class ProductCreate(WireModel):
    factory_id: uuid.UUID
    category_id: uuid.UUID
    sku: Sku
    name: Name
    description: Description | None = None
    base_price: Rupiah
    cost_price: Rupiah
    moq: Moq
    group_duration_hours: GroupDurationHours


class ProductUpdate(PartialUpdate):
    """`description: null` clears the description."""

    CLEARABLE = frozenset({"description"})

    category_id: uuid.UUID | None = None
    name: Name | None = None
    description: Description | None = None
    base_price: Rupiah | None = None
    cost_price: Rupiah | None = None
    moq: Moq | None = None
    group_duration_hours: GroupDurationHours | None = None


class ProductOut(WireModel):
    id: uuid.UUID
    factory_id: uuid.UUID
    category_id: uuid.UUID
    sku: str
    name: str
    description: str | None
    base_price: Rupiah
    cost_price: Rupiah | None = Field(
        description="What the platform pays the factory; shown to admins and services only."
    )
    moq: int
    group_duration_hours: int
    status: ProductStatus
    created_at: datetime
    updated_at: datetime


class VariantCreate(WireModel):
    sku: Sku
    variant_name: VariantName
    price_adjustment: SignedRupiah = 0


class VariantBatch(RootModel[list[VariantCreate]]):
    """Variants created together: all of them, or none."""

    root: Annotated[list[VariantCreate], Field(min_length=1, max_length=MAX_VARIANTS_PER_REQUEST)]


class VariantOut(WireModel):
    id: uuid.UUID
    product_id: uuid.UUID
    sku: str
    variant_name: str
    price_adjustment: SignedRupiah
    created_at: datetime


# Under the services' 1 MiB body limit with the JSON around it.
MAX_UPLOAD_BASE64_CHARS = 1_000_000


class ImageCreate(WireModel):
    url: Annotated[HttpUrl, UrlConstraints(max_length=2048)]
    sort_order: SortOrder | None = Field(
        default=None, description="Position among the product's images; default: after the last."
    )


class ImageUpload(WireModel):
    """A photo as base64 (JPEG, PNG, WebP or GIF); it is stored resized for phones."""

    data_base64: Annotated[str, Field(min_length=1, max_length=MAX_UPLOAD_BASE64_CHARS)]


class ImageOut(WireModel):
    id: uuid.UUID
    product_id: uuid.UUID
    url: str
    sort_order: int
    created_at: datetime


class ProductDetailOut(ProductOut):
    variants: list[VariantOut]
    images: list[ImageOut]
