"""Factories: registration, contact details, verification, buyer reviews, staff accounts."""

import uuid
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from laku.auth.client import AuthClient, CreateUserRequest, UserOut
from laku.core.errors import Conflict, NotFound
from laku.core.http import ServiceCallError
from laku.core.rows import found, page
from laku.core.security import Role
from laku.factory.models import Factory, FactoryReview
from laku.factory.rules import VerificationStatus
from laku.factory.schemas import (
    FactoryCreate,
    FactoryUpdate,
    FactoryUserCreate,
    ReviewCreate,
    VerificationUpdate,
)


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def _reloaded(session: AsyncSession, factory: Factory) -> Factory:
    """Read back what the database computed (timestamps, rating aggregates) after a write."""
    await session.refresh(factory)
    return factory


async def create_factory(session: AsyncSession, request: FactoryCreate) -> Factory:
    factory = Factory(
        **request.model_dump(by_alias=False), verification_status=VerificationStatus.PENDING.value
    )
    session.add(factory)
    await session.commit()
    return await _reloaded(session, factory)


async def get_factory(session: AsyncSession, factory_id: uuid.UUID) -> Factory:
    return found(
        await session.get(Factory, factory_id),
        NotFound("No such factory", code="factory_not_found"),
    )


async def list_factories(
    session: AsyncSession,
    *,
    limit: int,
    offset: int,
    status: VerificationStatus | None = None,
    name_contains: str | None = None,
) -> tuple[list[Factory], int]:
    query = select(Factory)
    if status is not None:
        query = query.where(Factory.verification_status == status.value)
    if name_contains:
        query = query.where(Factory.name.ilike(f"%{_escape_like(name_contains)}%", escape="\\"))
    return await page(
        session, query, Factory.created_at.desc(), Factory.id, limit=limit, offset=offset
    )


async def update_factory(
    session: AsyncSession, factory_id: uuid.UUID, request: FactoryUpdate
) -> Factory:
    factory = await get_factory(session, factory_id)
    for field, value in request.model_dump(by_alias=False, exclude_unset=True).items():
        setattr(factory, field, value)
    await session.commit()
    return await _reloaded(session, factory)


async def set_verification(
    session: AsyncSession, factory_id: uuid.UUID, request: VerificationUpdate
) -> Factory:
    """Admins may move a factory between any two statuses (e.g. revoke a verification, or
    reconsider a rejection). `verifiedAt` is when it last became verified; it is cleared when
    the factory stops being verified."""
    factory = await get_factory(session, factory_id)
    if factory.verification_status != request.status.value:
        factory.verification_status = request.status.value
        verified = request.status is VerificationStatus.VERIFIED
        factory.verified_at = datetime.now(UTC) if verified else None
    factory.verification_reason = request.reason
    await session.commit()
    return await _reloaded(session, factory)


async def add_review(
    session: AsyncSession, factory_id: uuid.UUID, user_id: uuid.UUID, request: ReviewCreate
) -> FactoryReview:
    await get_factory(session, factory_id)
    review = FactoryReview(
        factory_id=factory_id, user_id=user_id, rating=request.rating, comment=request.comment
    )
    session.add(review)
    try:
        await session.commit()
    except IntegrityError as exc:
        # The unique (factory, user) constraint also settles two concurrent first reviews.
        await session.rollback()
        raise Conflict("You have already reviewed this factory", code="review_exists") from exc
    return review


async def list_reviews(
    session: AsyncSession, factory_id: uuid.UUID, *, limit: int, offset: int
) -> tuple[list[FactoryReview], int]:
    await get_factory(session, factory_id)
    return await page(
        session,
        select(FactoryReview).where(FactoryReview.factory_id == factory_id),
        FactoryReview.created_at.desc(),
        FactoryReview.id,
        limit=limit,
        offset=offset,
    )


async def create_factory_user(
    session: AsyncSession, auth: AuthClient, factory_id: uuid.UUID, request: FactoryUserCreate
) -> UserOut:
    await get_factory(session, factory_id)
    await session.rollback()  # nothing to write here: free the connection during the call
    # The same factory and e-mail always make the same key, so a retried request gets auth's
    # first answer back instead of a second account.
    email = request.email.lower()
    try:
        return await auth.create_user(
            CreateUserRequest(
                email=email,
                password=request.password,
                name=request.name,
                phone=request.phone,
                role=Role.FACTORY,
                factory_id=factory_id,
            ),
            idempotency_key=f"factory-user:{factory_id}:{email}",
        )
    except ServiceCallError as exc:
        # Auth refuses a known key with another body: that e-mail already has an account.
        if exc.code == "idempotency_key_reused":
            raise Conflict(
                "An account with this e-mail already exists", code="email_taken"
            ) from exc
        raise
