"""The catalog: categories, products and their lifecycle, variants, images."""

import re
import unicodedata
import uuid
from collections import Counter
from collections.abc import Sequence

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from laku.core.errors import Conflict, DomainError, InvalidInput, NotFound
from laku.core.rows import found, page
from laku.factory.client import FactoryClient
from laku.product.models import Category, Product, ProductImage, ProductVariant
from laku.product.rules import ProductStatus
from laku.product.schemas import (
    CategoryCreate,
    ImageCreate,
    ProductCreate,
    ProductUpdate,
    VariantCreate,
)

_SLUG_MAX_LENGTH = 200


# --- errors shared by several operations -------------------------------------------------------


def _product_not_found(product_id: uuid.UUID) -> NotFound:
    return NotFound(f"No product {product_id}", code="product_not_found")


def _unknown_category(category_id: uuid.UUID) -> InvalidInput:
    return InvalidInput(f"No category {category_id}", code="unknown_category")


def _sku_taken(skus: Sequence[str]) -> Conflict:
    return Conflict(f"SKU already in use: {', '.join(sorted(skus))}", code="sku_taken")


def _violated_constraint(exc: IntegrityError) -> str | None:
    # asyncpg's own error (the DB-API error's cause) names the constraint.
    return getattr(exc.orig.__cause__, "constraint_name", None) if exc.orig else None


async def _commit(session: AsyncSession, errors_by_constraint: dict[str, DomainError]) -> None:
    """Commit; a unique constraint lost to a concurrent request becomes its domain error."""
    try:
        await session.commit()
    except IntegrityError as exc:
        await session.rollback()
        error = errors_by_constraint.get(_violated_constraint(exc) or "")
        if error is None:
            raise
        raise error from exc


# --- categories --------------------------------------------------------------------------------


def slugify(name: str) -> str:
    """`"Pakaian & Fashion"` → `"pakaian-fashion"`: accents dropped, symbols become hyphens."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")[:_SLUG_MAX_LENGTH].strip("-")


async def create_category(session: AsyncSession, request: CategoryCreate) -> Category:
    slug = request.slug or slugify(request.name)
    if not slug:
        raise InvalidInput(
            "The name gives no usable slug; send one (lower-case letters, digits, hyphens)",
            code="invalid_slug",
        )
    if request.parent_id is not None and await session.get(Category, request.parent_id) is None:
        raise _unknown_category(request.parent_id)
    slug_taken = Conflict(f"Category slug {slug!r} is already in use", code="slug_taken")
    if await session.scalar(select(Category.id).where(Category.slug == slug)):
        raise slug_taken
    category = Category(name=request.name, slug=slug, parent_id=request.parent_id)
    session.add(category)
    await _commit(session, {"uq_categories_slug": slug_taken})
    return category


async def list_categories(session: AsyncSession) -> Sequence[Category]:
    return (await session.scalars(select(Category).order_by(Category.name, Category.slug))).all()


# --- products ----------------------------------------------------------------------------------


def _check_cost_within_price(base_price: int, cost_price: int) -> None:
    if cost_price > base_price:
        raise InvalidInput(
            f"costPrice {cost_price} is above basePrice {base_price}", code="cost_above_price"
        )


async def _require_category(session: AsyncSession, category_id: uuid.UUID) -> None:
    if await session.get(Category, category_id) is None:
        raise _unknown_category(category_id)


async def create_product(
    session: AsyncSession, factories: FactoryClient, request: ProductCreate
) -> Product:
    _check_cost_within_price(request.base_price, request.cost_price)
    # Asked before the database is touched, so no connection idles during the call.
    if await factories.get_factory(request.factory_id) is None:
        raise InvalidInput(f"No factory {request.factory_id}", code="unknown_factory")
    await _require_category(session, request.category_id)
    if await session.scalar(select(Product.id).where(Product.sku == request.sku)):
        raise _sku_taken([request.sku])
    product = Product(**request.model_dump(by_alias=False), status=ProductStatus.DRAFT.value)
    session.add(product)
    await _commit(session, {"uq_products_sku": _sku_taken([request.sku])})
    return product


def _name_contains(term: str) -> str:
    """An ILIKE pattern matching `term` literally anywhere (its % and _ are not wildcards)."""
    escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _in_category_tree(category_id: uuid.UUID) -> ColumnElement[bool]:
    """Products of the category or of any of its subcategories."""
    tree = select(Category.id).where(Category.id == category_id).cte(recursive=True)
    tree = tree.union_all(select(Category.id).where(Category.parent_id == tree.c.id))
    return Product.category_id.in_(select(tree.c.id))


async def list_products(
    session: AsyncSession,
    *,
    limit: int,
    offset: int,
    status: ProductStatus | None = None,
    category_id: uuid.UUID | None = None,
    factory_id: uuid.UUID | None = None,
    name_contains: str | None = None,
) -> tuple[Sequence[Product], int]:
    conditions: list[ColumnElement[bool]] = []
    if status is not None:
        conditions.append(Product.status == status.value)
    if category_id is not None:
        conditions.append(_in_category_tree(category_id))
    if factory_id is not None:
        conditions.append(Product.factory_id == factory_id)
    if name_contains:
        conditions.append(Product.name.ilike(_name_contains(name_contains), escape="\\"))
    return await page(
        session,
        select(Product).where(*conditions),
        Product.created_at.desc(),
        Product.id.desc(),
        limit=limit,
        offset=offset,
    )


async def get_product(
    session: AsyncSession,
    product_id: uuid.UUID,
    *,
    include_unpublished: bool,
    with_details: bool = False,
) -> Product:
    """The product; one the caller may not see (a draft or archived one, for the public) is
    reported as missing rather than forbidden, so its existence does not leak."""
    query = select(Product).where(Product.id == product_id)
    if with_details:
        query = query.options(selectinload(Product.variants), selectinload(Product.images))
    product = await session.scalar(query)
    if product is None or (
        not include_unpublished and product.status != ProductStatus.PUBLISHED.value
    ):
        raise _product_not_found(product_id)
    return product


async def _lock_product(session: AsyncSession, product_id: uuid.UUID) -> Product:
    """The product row, locked until commit: prices, variants and status change one at a time."""
    return found(
        await session.get(Product, product_id, with_for_update=True), _product_not_found(product_id)
    )


def _require_editable(product: Product) -> None:
    if product.status == ProductStatus.ARCHIVED.value:
        raise Conflict("An archived product cannot be changed", code="invalid_status")


def _check_variant_price(base_price: int, variant_name: str, price_adjustment: int) -> None:
    if base_price + price_adjustment < 0:
        raise InvalidInput(
            f"Variant {variant_name!r} would cost {base_price + price_adjustment} "
            f"(basePrice {base_price} + priceAdjustment {price_adjustment})",
            code="negative_variant_price",
        )


async def update_product(
    session: AsyncSession, product_id: uuid.UUID, request: ProductUpdate
) -> Product:
    product = await _lock_product(session, product_id)
    _require_editable(product)
    changes = request.model_dump(by_alias=False, exclude_unset=True)
    if "category_id" in changes:
        await _require_category(session, changes["category_id"])
    base_price = changes.get("base_price", product.base_price)
    _check_cost_within_price(base_price, changes.get("cost_price", product.cost_price))
    if "base_price" in changes:
        cheapest = await session.scalar(
            select(ProductVariant)
            .where(ProductVariant.product_id == product.id)
            .order_by(ProductVariant.price_adjustment)
            .limit(1)
        )
        if cheapest is not None:
            _check_variant_price(base_price, cheapest.variant_name, cheapest.price_adjustment)
    for field, value in changes.items():
        setattr(product, field, value)
    await session.commit()
    await session.refresh(product)  # updated_at is set by the database
    return product


async def publish_product(session: AsyncSession, product_id: uuid.UUID) -> Product:
    """draft → published, once it has something to sell. Archived products stay archived."""
    product = await _lock_product(session, product_id)
    if product.status != ProductStatus.DRAFT.value:
        raise Conflict(
            f"Only a draft can be published; this product is {product.status}",
            code="invalid_status",
        )
    variant_count = await session.scalar(
        select(func.count()).where(ProductVariant.product_id == product.id)
    )
    if not variant_count:
        raise Conflict("A product needs at least one variant to be published", code="no_variants")
    product.status = ProductStatus.PUBLISHED.value
    await session.commit()
    await session.refresh(product)
    return product


async def archive_product(session: AsyncSession, product_id: uuid.UUID) -> Product:
    """published (or an abandoned draft) → archived: no longer listed, no longer editable."""
    product = await _lock_product(session, product_id)
    if product.status == ProductStatus.ARCHIVED.value:
        raise Conflict("The product is already archived", code="invalid_status")
    product.status = ProductStatus.ARCHIVED.value
    await session.commit()
    await session.refresh(product)
    return product


# --- variants and images -----------------------------------------------------------------------


def _repeated(values: Sequence[str]) -> list[str]:
    return [value for value, count in Counter(values).items() if count > 1]


async def add_variants(
    session: AsyncSession, product_id: uuid.UUID, requests: Sequence[VariantCreate]
) -> list[ProductVariant]:
    """All the variants in one transaction: if any one is refused, none is created."""
    product = await _lock_product(session, product_id)
    _require_editable(product)
    skus = [request.sku for request in requests]
    names = [request.variant_name for request in requests]
    if repeated := _repeated(skus):
        raise InvalidInput(f"SKU sent more than once: {', '.join(repeated)}", code="duplicate_sku")
    if repeated := _repeated(names):
        raise InvalidInput(
            f"Variant name sent more than once: {', '.join(repeated)}",
            code="duplicate_variant_name",
        )
    for request in requests:
        _check_variant_price(product.base_price, request.variant_name, request.price_adjustment)
    if taken := (
        await session.scalars(select(ProductVariant.sku).where(ProductVariant.sku.in_(skus)))
    ).all():
        raise _sku_taken(taken)
    variant_name_taken = Conflict(
        "The product already has a variant with this name", code="variant_name_taken"
    )
    if await session.scalar(
        select(ProductVariant.id).where(
            ProductVariant.product_id == product.id, ProductVariant.variant_name.in_(names)
        )
    ):
        raise variant_name_taken
    variants = [
        ProductVariant(product_id=product.id, **request.model_dump(by_alias=False))
        for request in requests
    ]
    session.add_all(variants)
    await _commit(
        session,
        {
            "uq_product_variants_sku": _sku_taken(skus),
            "uq_product_variants_product_id_variant_name": variant_name_taken,
        },
    )
    return variants


async def list_variants(session: AsyncSession, product: Product) -> Sequence[ProductVariant]:
    return (
        await session.scalars(
            select(ProductVariant)
            .where(ProductVariant.product_id == product.id)
            .order_by(ProductVariant.price_adjustment, ProductVariant.variant_name)
        )
    ).all()


async def add_image(
    session: AsyncSession, product_id: uuid.UUID, request: ImageCreate
) -> ProductImage:
    product = await _lock_product(session, product_id)
    _require_editable(product)
    sort_order = request.sort_order
    if sort_order is None:
        last = await session.scalar(
            select(func.max(ProductImage.sort_order)).where(ProductImage.product_id == product.id)
        )
        sort_order = 0 if last is None else last + 1
    image = ProductImage(product_id=product.id, url=str(request.url), sort_order=sort_order)
    session.add(image)
    await session.commit()
    return image
