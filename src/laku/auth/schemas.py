import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import EmailStr, Field, model_validator

from laku.core.schemas import Text, WireModel
from laku.core.security import Role

Password = Annotated[str, Field(min_length=8, max_length=128)]
Phone = Annotated[str, Field(pattern=r"^\+?[0-9]{8,15}$")]
# Per lookup: a batch of notifications names at most this many users.
MAX_USERS_PER_LOOKUP = 2_000


class RegisterRequest(WireModel):
    email: EmailStr
    password: Password
    name: Text(200)
    phone: Phone | None = None


class CreateUserRequest(RegisterRequest):
    """An account with any role; a factory account is bound to its factory."""

    role: Role
    factory_id: uuid.UUID | None = None

    @model_validator(mode="after")
    def _factory_binding(self) -> "CreateUserRequest":
        if self.role is Role.SERVICE:
            raise ValueError("service identities are not user accounts")
        if (self.role is Role.FACTORY) != (self.factory_id is not None):
            raise ValueError("factoryId is required for, and only for, the factory role")
        return self


class LoginRequest(WireModel):
    email: EmailStr
    password: Annotated[str, Field(min_length=1, max_length=128)]


class ServiceTokenRequest(WireModel):
    """A service asking for a token in its own name, with its own credential."""

    service_name: Annotated[str, Field(pattern=r"^[a-z][a-z-]{1,31}$")]
    credential: Annotated[str, Field(min_length=1, max_length=256)]


class TokenResponse(WireModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int


class LoginResponse(TokenResponse):
    """A short-lived access token (`expiresIn` seconds) and the refresh token that renews it
    (`refreshExpiresIn` seconds unused; each is used once, the answer carries the next)."""

    refresh_token: str
    refresh_expires_in: int


RefreshTokenText = Annotated[str, Field(min_length=1, max_length=128)]


class RefreshRequest(WireModel):
    refresh_token: RefreshTokenText


class LogoutRequest(WireModel):
    """Ends the session of the bearer token, or of this refresh token (when the access token
    has expired already), or both."""

    refresh_token: RefreshTokenText | None = None


class RevocationOut(WireModel):
    session_id: uuid.UUID
    revoked_at: datetime
    # No access token of the session outlives this: a verifier may forget it afterwards.
    tokens_valid_until: datetime


class RevocationsOut(WireModel):
    """Sessions revoked since the time asked about. `asOf`: when this answer was read; ask
    next from a little before it (a revocation still committing may carry an earlier time)."""

    as_of: datetime
    revocations: list[RevocationOut]


class UserOut(WireModel):
    id: uuid.UUID
    email: str
    name: str
    phone: str | None
    role: Role
    factory_id: uuid.UUID | None
    created_at: datetime


class UsersLookup(WireModel):
    ids: Annotated[list[uuid.UUID], Field(min_length=1, max_length=MAX_USERS_PER_LOOKUP)]


class UserContactOut(WireModel):
    """How to reach a user: what other services need to notify them."""

    id: uuid.UUID
    email: str
    name: str
    phone: str | None


class Jwks(WireModel):
    keys: list[dict[str, str]]
