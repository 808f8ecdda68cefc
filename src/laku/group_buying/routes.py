import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response, status

from laku.core.app import DbSession
from laku.core.errors import PROBLEM_RESPONSES
from laku.core.security import AdminPrincipal, CurrentPrincipal
from laku.group_buying import service
from laku.group_buying.schemas import (
    BundleCompositionCreate,
    BundleCompositionOut,
    BundleCompositionReplace,
)
from laku.product.client import ProductClient

router = APIRouter(tags=["group_buying"], responses=PROBLEM_RESPONSES)


def _product_client(request: Request) -> ProductClient:
    return request.app.state.product_client


Products = Annotated[ProductClient, Depends(_product_client)]


@router.post(
    "/api/admin/bundle-composition",
    response_model=BundleCompositionOut,
    status_code=status.HTTP_201_CREATED,
)
async def set_bundle_composition(
    body: BundleCompositionCreate, _: AdminPrincipal, session: DbSession, products: Products
):
    """Set a product's whole bundle composition (seed step 1.3); variants not listed leave it."""
    return await service.set_composition(session, products, body.root)


@router.get("/api/bundle-composition/{product_id}", response_model=BundleCompositionOut)
async def get_bundle_composition(product_id: uuid.UUID, _: CurrentPrincipal, session: DbSession):
    return await service.get_composition(session, product_id)


@router.put("/api/admin/bundle-composition/{product_id}", response_model=BundleCompositionOut)
async def replace_bundle_composition(
    product_id: uuid.UUID,
    body: BundleCompositionReplace,
    _: AdminPrincipal,
    session: DbSession,
    products: Products,
):
    """Set the product's whole bundle composition, whether or not it had one."""
    return await service.replace_composition(session, products, product_id, body.root)


@router.delete(
    "/api/admin/bundle-composition/{product_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
)
async def delete_bundle_composition(
    product_id: uuid.UUID, _: AdminPrincipal, session: DbSession
) -> None:
    await service.delete_composition(session, product_id)
