"""Typed client other services use to call auth-service."""

from laku.auth.schemas import CreateUserRequest, UserOut
from laku.core.http import ServiceClient


class AuthClient(ServiceClient):
    async def create_user(self, request: CreateUserRequest, *, idempotency_key: str) -> UserOut:
        response = await self.request(
            "POST",
            "/api/auth/users",
            json=request.model_dump(mode="json", by_alias=True),
            idempotency_key=idempotency_key,
        )
        return UserOut.model_validate(response.json())
