"""What a factory account sees of the warehouse: its own factory's purchase orders and
invoices, and nothing when its token names no factory; admins see every factory's."""

import uuid
from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from laku.core.rows import page
from laku.core.security import Principal, Role
from laku.warehouse.models import PurchaseOrder, WarehouseInvoice

Row = TypeVar("Row", PurchaseOrder, WarehouseInvoice)


def sees_factory(principal: Principal, factory_id: uuid.UUID) -> bool:
    """Whether `principal` sees what belongs to `factory_id` (another factory's does not exist
    for it)."""
    return principal.role is not Role.FACTORY or principal.factory_id == factory_id


async def visible_page(
    session: AsyncSession,
    model: type[Row],
    principal: Principal,
    *,
    limit: int,
    offset: int,
    **equal_to: object,
) -> tuple[list[Row], int]:
    """A page of the rows of `model` that `principal` sees and whose columns equal the values
    given (None: any), newest first, and how many there are."""
    if principal.is_unbound_factory:  # no factory to scope by: nothing, never everything
        return [], 0
    query = select(model).where(
        *(getattr(model, name) == value for name, value in equal_to.items() if value is not None)
    )
    if principal.role is Role.FACTORY:
        query = query.where(model.factory_id == principal.factory_id)
    return await page(session, query, model.created_at.desc(), model.id, limit=limit, offset=offset)
