import uuid
from typing import Annotated, TypeVar

from fastapi import APIRouter, Depends, Query, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from laku.core.app import DbSession
from laku.core.errors import PROBLEM_RESPONSES, Forbidden
from laku.core.routing import FactoryFilter, app_state
from laku.core.schemas import Page, Paging, SearchText
from laku.core.security import (
    PUBLIC,
    AdminPrincipal,
    Principal,
    current_principal,
    declares_access,
    public,
)
from laku.factory.client import FactoryClient
from laku.product import service
from laku.product.images import save_for_phones
from laku.product.rules import ProductStatus
from laku.product.schemas import (
    CategoryCreate,
    CategoryOut,
    ImageCreate,
    ImageOut,
    ImageUpload,
    ProductCreate,
    ProductDetailOut,
    ProductOut,
    ProductUpdate,
    VariantBatch,
    VariantOut,
)

router = APIRouter(tags=["product"], responses=PROBLEM_RESPONSES)

_optional_bearer = HTTPBearer(auto_error=False)


@declares_access(PUBLIC)
async def _optional_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_optional_bearer)],
) -> Principal | None:
    """The catalog is public: no token means an anonymous shopper, but a token that is sent
    must be valid (a bad one is a 401, not a silent downgrade to anonymous)."""
    if credentials is None:
        return None
    return await current_principal(request, credentials)


OptionalPrincipal = Annotated[Principal | None, Depends(_optional_principal)]
# factory-service, which a product's `factoryId` must name.
Factories = Annotated[FactoryClient, Depends(app_state("factory_client"))]


def _sees_everything(principal: Principal | None) -> bool:
    """Admins and internal services see every status and the cost price; others see only
    published products, without what the platform pays the factory."""
    return principal is not None and principal.is_privileged


ProductView = TypeVar("ProductView", bound=ProductOut)


def _for_caller(view: ProductView, principal: Principal | None) -> ProductView:
    return view if _sees_everything(principal) else view.model_copy(update={"cost_price": None})


@router.post("/api/categories", response_model=CategoryOut, status_code=status.HTTP_201_CREATED)
async def create_category(body: CategoryCreate, _: AdminPrincipal, session: DbSession):
    return await service.create_category(session, body)


@router.get("/api/categories", response_model=list[CategoryOut], dependencies=[Depends(public)])
async def list_categories(session: DbSession):
    return await service.list_categories(session)


@router.post("/api/products", response_model=ProductOut, status_code=status.HTTP_201_CREATED)
async def create_product(
    body: ProductCreate,
    _: AdminPrincipal,
    session: DbSession,
    factories: Factories,
):
    return await service.create_product(session, factories, body)


@router.get("/api/products", response_model=Page[ProductOut])
async def list_products(
    principal: OptionalPrincipal,
    session: DbSession,
    paging: Paging,
    status_filter: Annotated[
        ProductStatus | None,
        Query(alias="status", description="Admins only, except `published`; default: all"),
    ] = None,
    category_id: Annotated[
        uuid.UUID | None, Query(alias="categoryId", description="Includes its subcategories")
    ] = None,
    factory_id: FactoryFilter = None,
    q: SearchText = None,
) -> Page[ProductOut]:
    if not _sees_everything(principal):
        if status_filter not in (None, ProductStatus.PUBLISHED):
            raise Forbidden("Only admins list unpublished products", code="admin_only_filter")
        status_filter = ProductStatus.PUBLISHED
    products, total = await service.list_products(
        session,
        limit=paging.limit,
        offset=paging.offset,
        status=status_filter,
        category_id=category_id,
        factory_id=factory_id,
        name_contains=q,
    )
    items = [_for_caller(ProductOut.model_validate(p), principal) for p in products]
    return Page.of(items, total, paging)


@router.get("/api/products/{product_id}", response_model=ProductDetailOut)
async def get_product(
    product_id: uuid.UUID, principal: OptionalPrincipal, session: DbSession
) -> ProductDetailOut:
    product = await service.get_product(
        session, product_id, include_unpublished=_sees_everything(principal), with_details=True
    )
    return _for_caller(ProductDetailOut.model_validate(product), principal)


@router.patch("/api/products/{product_id}", response_model=ProductOut)
async def update_product(
    product_id: uuid.UUID, body: ProductUpdate, _: AdminPrincipal, session: DbSession
):
    return await service.update_product(session, product_id, body)


@router.post("/api/products/{product_id}/publish", response_model=ProductOut)
async def publish_product(product_id: uuid.UUID, _: AdminPrincipal, session: DbSession):
    return await service.publish_product(session, product_id)


@router.post("/api/products/{product_id}/archive", response_model=ProductOut)
async def archive_product(product_id: uuid.UUID, _: AdminPrincipal, session: DbSession):
    return await service.archive_product(session, product_id)


@router.post(
    "/api/products/{product_id}/variants",
    response_model=list[VariantOut],
    status_code=status.HTTP_201_CREATED,
)
async def add_variants(
    product_id: uuid.UUID, body: VariantBatch, _: AdminPrincipal, session: DbSession
):
    return await service.add_variants(session, product_id, body.root)


@router.get("/api/products/{product_id}/variants", response_model=list[VariantOut])
async def list_variants(product_id: uuid.UUID, principal: OptionalPrincipal, session: DbSession):
    product = await service.get_product(
        session, product_id, include_unpublished=_sees_everything(principal)
    )
    return await service.list_variants(session, product)


@router.post(
    "/api/products/{product_id}/images",
    response_model=ImageOut,
    status_code=status.HTTP_201_CREATED,
)
async def add_image(
    product_id: uuid.UUID, body: ImageCreate, _: AdminPrincipal, session: DbSession
):
    return await service.add_image(session, product_id, body)


@router.post(
    "/api/products/{product_id}/images/upload",
    response_model=ImageOut,
    status_code=status.HTTP_201_CREATED,
)
async def upload_image(
    product_id: uuid.UUID,
    body: ImageUpload,
    request: Request,
    _: AdminPrincipal,
    session: DbSession,
):
    """An admin's photo: refused unless it is an image, stored at most 1080 px a side as a
    JPEG, and added after the product's other images."""
    await service.get_product(session, product_id, include_unpublished=True)
    url = await save_for_phones(request.app.state.photos, product_id, body.data_base64)
    return await service.add_image(session, product_id, ImageCreate(url=url))
