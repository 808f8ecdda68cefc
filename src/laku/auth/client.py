"""Typed client other services use to call auth-service."""

import uuid
from collections.abc import Collection

from pydantic import TypeAdapter

from laku.auth.schemas import (
    MAX_USERS_PER_LOOKUP,
    CreateUserRequest,
    UserContactOut,
    UserOut,
    UsersLookup,
)
from laku.core.batches import digest
from laku.core.http import ServiceClient

__all__ = ["MAX_USERS_PER_LOOKUP", "AuthClient", "CreateUserRequest", "UserContactOut", "UserOut"]

_contacts: TypeAdapter[list[UserContactOut]] = TypeAdapter(list[UserContactOut])


class AuthClient(ServiceClient):
    async def create_user(self, request: CreateUserRequest, *, idempotency_key: str) -> UserOut:
        return await self.post_model(
            "/api/auth/users", request, UserOut, idempotency_key=idempotency_key
        )

    async def lookup_users(self, user_ids: Collection[uuid.UUID]) -> list[UserContactOut]:
        """The e-mail, name and phone of up to MAX_USERS_PER_LOOKUP users in one call; ids that
        name no user are left out of the answer."""
        ids = sorted(set(user_ids))
        body = UsersLookup(ids=ids).model_dump(mode="json", by_alias=True)
        # A POST only because the ids would not fit in a URL: it reads, so the key (which lets
        # the call be retried) is simply the ids'.
        key = f"users-lookup:{digest(map(str, ids))}"
        response = await self.request(
            "POST", "/api/auth/users/lookup", json=body, idempotency_key=key
        )
        return _contacts.validate_python(response.json())
