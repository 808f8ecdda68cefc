"""Grosir bundle composition: how many units of each variant one wholesale bundle carries."""

import uuid
from collections import Counter
from collections.abc import Sequence

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from laku.core.errors import InvalidInput, NotFound
from laku.group_buying.models import BundleComponent
from laku.group_buying.schemas import (
    BundleCompositionOut,
    BundleItemIn,
    BundleItemOut,
    ProductBundleItemIn,
)
from laku.product.client import ProductClient


def _composition_not_found(product_id: uuid.UUID) -> NotFound:
    return NotFound(f"Product {product_id} has no bundle composition", code="composition_not_found")


def _composition(
    product_id: uuid.UUID, components: Sequence[BundleComponent]
) -> BundleCompositionOut:
    return BundleCompositionOut(
        product_id=product_id,
        units_per_bundle=sum(component.units_in_bundle for component in components),
        items=[BundleItemOut.model_validate(component) for component in components],
    )


async def _components(session: AsyncSession, product_id: uuid.UUID) -> Sequence[BundleComponent]:
    return (
        await session.scalars(
            select(BundleComponent)
            .where(BundleComponent.product_id == product_id)
            .order_by(BundleComponent.variant_id)
        )
    ).all()


async def _lock_composition(session: AsyncSession, product_id: uuid.UUID) -> None:
    """Serialises writers of one product's composition until commit. There is no row to lock
    when a product has none yet, so two first writers would otherwise both insert."""
    await session.execute(
        select(
            func.pg_advisory_xact_lock(
                func.hashtextextended(f"group_buying.bundle_composition:{product_id}", 0)
            )
        )
    )


async def _check_variants_of_product(
    products: ProductClient, product_id: uuid.UUID, variant_ids: Sequence[uuid.UUID]
) -> None:
    product = await products.get_product(product_id)
    if product is None:
        raise InvalidInput(f"No product {product_id}", code="unknown_product")
    foreign = set(variant_ids) - {variant.id for variant in product.variants}
    if foreign:
        raise InvalidInput(
            f"Not variants of product {product_id}: {', '.join(sorted(map(str, foreign)))}",
            code="unknown_variant",
        )


async def replace_composition(
    session: AsyncSession,
    products: ProductClient,
    product_id: uuid.UUID,
    items: Sequence[BundleItemIn],
) -> BundleCompositionOut:
    """The product's bundle becomes exactly these items, in one transaction: variants not
    listed leave it. Everything is checked before anything is written."""
    variant_ids = [item.variant_id for item in items]
    repeated = [str(variant_id) for variant_id, n in Counter(variant_ids).items() if n > 1]
    if repeated:
        raise InvalidInput(
            f"variantId sent more than once: {', '.join(repeated)}", code="duplicate_variant"
        )
    # Asked before the database is touched, so no connection idles during the call.
    await _check_variants_of_product(products, product_id, variant_ids)

    await _lock_composition(session, product_id)
    await session.execute(delete(BundleComponent).where(BundleComponent.product_id == product_id))
    components = sorted(
        (
            BundleComponent(
                product_id=product_id,
                variant_id=item.variant_id,
                units_in_bundle=item.units_in_bundle,
            )
            for item in items
        ),
        key=lambda component: component.variant_id,  # the order GET reads them in
    )
    session.add_all(components)
    await session.commit()
    return _composition(product_id, components)


async def set_composition(
    session: AsyncSession, products: ProductClient, items: Sequence[ProductBundleItemIn]
) -> BundleCompositionOut:
    """The seed's step 1.3: a list naming its product on every item."""
    product_ids = {item.product_id for item in items}
    if len(product_ids) != 1:
        raise InvalidInput(
            f"Every item must name the same productId; got {len(product_ids)} products",
            code="mixed_products",
        )
    return await replace_composition(session, products, product_ids.pop(), items)


async def get_composition(session: AsyncSession, product_id: uuid.UUID) -> BundleCompositionOut:
    components = await _components(session, product_id)
    if not components:
        raise _composition_not_found(product_id)
    return _composition(product_id, components)


async def delete_composition(session: AsyncSession, product_id: uuid.UUID) -> None:
    await _lock_composition(session, product_id)
    deleted = await session.execute(
        delete(BundleComponent)
        .where(BundleComponent.product_id == product_id)
        .returning(BundleComponent.id)
    )
    if not deleted.all():
        raise _composition_not_found(product_id)
    await session.commit()
