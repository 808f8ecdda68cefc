"""`Idempotency-Key`: the same key and body get the first successful response; another body is
refused. Refusals (4xx) and failures (5xx) are not kept: they changed nothing, so a retry runs.

Keys are scoped to the caller (token subject), stored in the service's own schema, and claimed
before the handler runs, so two concurrent requests with one key never both execute. They are
kept for `idempotency_key_retention_hours` (24), then purged (`purge_expired_keys`); one past
that age and not purged yet is free for any request, as if it were gone.

Nothing kept reveals a request or a credential: the fingerprint of a request is an HMAC-SHA256
under `idempotency_key_secret` (a body may hold a password, and a plain hash of it could be
tested against guesses), and a response marked `Cache-Control: no-store` (one carrying a token,
see `no_store`) is never kept: its key is released as a refusal's is, so a retry runs again and
gets a fresh token of its own rather than a copy of the first.
"""

import hashlib
import hmac
from datetime import timedelta

import structlog
from fastapi import Response
from sqlalchemy import (
    Column,
    DateTime,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    and_,
    delete,
    func,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import insert
from starlette.datastructures import State
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from laku.core.db import Database
from laku.core.errors import DomainError, problem_response
from laku.core.middleware import header
from laku.core.security import TokenVerifier

IDEMPOTENCY_HEADER = "idempotency-key"
MAX_KEY_LENGTH = 255
# A claim whose request never finished (process killed) may be taken over after this long.
ABANDONED_AFTER = timedelta(seconds=60)
_UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

log = structlog.get_logger()


def no_store(response: Response) -> None:
    """A route dependency for responses that carry credentials (tokens): caches and the
    idempotency store must not keep them (RFC 6749 5.1)."""
    response.headers["cache-control"] = "no-store"


def _forbids_storing(start: Message) -> bool:
    for name, value in start.get("headers", []):
        if name.lower() == b"cache-control":
            directives = {part.strip().lower() for part in value.split(b",")}
            if b"no-store" in directives:
                return True
    return False


def request_fingerprint(secret: bytes, scope: Scope, body: bytes) -> str:
    """What makes a repeat the same request, keyed so that it tells nothing about the body."""
    request = b"\n".join(
        [scope["method"].encode(), scope["path"].encode(), scope["query_string"], body]
    )
    return hmac.new(secret, request, hashlib.sha256).hexdigest()


def idempotency_table(metadata: MetaData) -> Table:
    return Table(
        "idempotency_keys",
        metadata,
        Column("scope", String(255), primary_key=True),
        Column("key", String(MAX_KEY_LENGTH), primary_key=True),
        Column("fingerprint", String(64), nullable=False),
        Column("status_code", Integer, nullable=True),
        Column("content_type", String(100), nullable=True),
        Column("body", LargeBinary, nullable=True),
        Column("created_at", DateTime(timezone=True), server_default=func.now(), nullable=False),
    )


PURGE_BATCH = 5_000


async def purge_expired_keys(db: Database, table: Table, older_than: timedelta) -> int:
    """Forget keys claimed more than `older_than` ago (a retry that late is asked anew, and
    the work's own references keep it from being done twice), in short batches. Returns how
    many went."""
    t = table
    purged = 0
    while True:
        async with db.sessions.begin() as session:
            batch = (
                select(t.c.scope, t.c.key)
                .where(t.c.created_at < func.now() - older_than)
                .limit(PURGE_BATCH)
            )
            deleted = (
                await session.execute(delete(t).where(tuple_(t.c.scope, t.c.key).in_(batch)))
            ).rowcount
        purged += deleted
        if deleted < PURGE_BATCH:
            return purged


class IdempotencyMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        table: Table,
        state: State,
        idempotent_by_body: frozenset[str] = frozenset(),
    ):
        self.app = app
        self.table = table
        self.state = state  # the app's state: its `db` and `token_verifier` exist once started
        # Paths whose bodies carry their own idempotency reference (a reservation's, a
        # payment's): they answer a repeat themselves, without two more transactions here.
        self.idempotent_by_body = idempotent_by_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        key = header(scope, IDEMPOTENCY_HEADER) if scope["type"] == "http" else None
        if (
            key is None
            or scope["method"] not in _UNSAFE_METHODS
            or scope["path"] in self.idempotent_by_body
        ):
            await self.app(scope, receive, send)
            return
        if not key or len(key) > MAX_KEY_LENGTH:
            await problem_response(
                422,
                "invalid_idempotency_key",
                "Invalid input",
                f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} characters.",
            )(scope, receive, send)
            return

        message = await receive()
        body = message.get("body", b"")
        caller = await self._caller(scope)
        fingerprint = request_fingerprint(self._fingerprint_secret, scope, body)

        # A claim that fails and then finds no row lost to a request that was refused and
        # released its claim meanwhile: this one is asked anew.
        while not await self._claim(caller, key, fingerprint):
            if await self._answer_existing(caller, key, fingerprint, scope, receive, send):
                return

        # The response is stored before the client sees it, so a retry that follows at once
        # gets the replay rather than "in progress". It is stored once the handler has
        # returned, after its own database session closed: storing takes a pooled connection,
        # and a handler still holding one (its locks too) while many such requests wait for a
        # second would starve the pool.
        response_start: Message = {"type": "http.response.start", "status": 500, "headers": []}
        chunks: list[bytes] = []
        complete = False

        async def capture(msg: Message) -> None:
            nonlocal response_start, complete
            if msg["type"] == "http.response.start":
                response_start = msg
            elif msg["type"] == "http.response.body":
                chunks.append(msg.get("body", b""))
                complete = not msg.get("more_body", False)
            else:
                await send(msg)

        async def replay() -> Message:
            return {"type": "http.request", "body": body, "more_body": False}

        try:
            await self.app(scope, replay, capture)
        except BaseException:
            await self._release(caller, key)
            raise
        if not complete:
            await self._release(caller, key)
            return
        answer = b"".join(chunks)
        await self._finish(caller, key, response_start, answer)
        await send(response_start)
        await send({"type": "http.response.body", "body": answer})

    @property
    def _db(self) -> Database:
        return self.state.db

    @property
    def _kept_for(self) -> timedelta:
        return timedelta(hours=self.state.settings.idempotency_key_retention_hours)

    @property
    def _fingerprint_secret(self) -> bytes:
        secret = self.state.settings.idempotency_key_secret
        if secret is None:  # refused at start (laku.core.secrets); never a fingerprint without
            raise RuntimeError("LAKU_IDEMPOTENCY_KEY_SECRET is not set")
        return secret.get_secret_value().encode()

    async def _caller(self, scope: Scope) -> str:
        authorization = header(scope, "authorization") or ""
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return "anonymous"
        try:
            verifier: TokenVerifier = self.state.token_verifier
            return (await verifier.verify(token)).subject
        except DomainError:
            return "anonymous"  # the handler answers 401; nothing is stored for a bad token

    async def _claim(self, caller: str, key: str, fingerprint: str) -> bool:
        t = self.table
        async with self._db.sessions.begin() as session:
            claimed = await session.execute(
                insert(t)
                .values(scope=caller, key=key, fingerprint=fingerprint)
                .on_conflict_do_nothing()
                .returning(t.c.key)
            )
            if claimed.first() is not None:
                return True
            taken_over = await session.execute(
                update(t)
                .where(
                    t.c.scope == caller,
                    t.c.key == key,
                    or_(
                        # Expired, though not purged yet: the key is free for any request.
                        t.c.created_at < func.now() - self._kept_for,
                        and_(
                            t.c.fingerprint == fingerprint,
                            t.c.status_code.is_(None),
                            t.c.created_at < func.now() - ABANDONED_AFTER,
                        ),
                    ),
                )
                .values(
                    fingerprint=fingerprint,
                    status_code=None,
                    content_type=None,
                    body=None,
                    created_at=func.now(),
                )
                .returning(t.c.key)
            )
            return taken_over.first() is not None

    async def _answer_existing(
        self, caller: str, key: str, fingerprint: str, scope: Scope, receive: Receive, send: Send
    ) -> bool:
        """Answer from the request that holds the key; False when none holds it any more."""
        t = self.table
        async with self._db.sessions() as session:
            row = (
                await session.execute(select(t).where(t.c.scope == caller, t.c.key == key))
            ).one_or_none()
        if row is None:
            return False
        if row.fingerprint != fingerprint:
            response = problem_response(
                422,
                "idempotency_key_reused",
                "Invalid input",
                "This Idempotency-Key was used with a different request.",
                instance=scope["path"],
            )
        elif row.status_code is None:
            response = problem_response(
                409,
                "idempotency_in_progress",
                "Conflict",
                "A request with this Idempotency-Key is still being processed.",
                instance=scope["path"],
                headers={"Retry-After": "1"},
            )
        else:
            await send(
                {
                    "type": "http.response.start",
                    "status": row.status_code,
                    "headers": [
                        (b"content-type", (row.content_type or "application/json").encode()),
                        (b"idempotent-replayed", b"true"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": row.body or b""})
            return True
        await response(scope, receive, send)
        return True

    async def _finish(self, caller: str, key: str, start: Message, body: bytes) -> None:
        """Keep the response of a request that did something; forget the claim of one that was
        refused or failed. A refusal changed nothing, so a retry is simply asked again and gets
        today's answer (stock may have come in since; a conflict may have cleared). A response
        that may not be stored (it carries a token) is forgotten too."""
        status = start["status"]
        if status >= 400 or _forbids_storing(start):
            await self._release(caller, key)
            return
        content_type = dict(start.get("headers", [])).get(b"content-type", b"application/json")
        t = self.table
        async with self._db.sessions.begin() as session:
            await session.execute(
                update(t)
                .where(t.c.scope == caller, t.c.key == key, t.c.status_code.is_(None))
                .values(status_code=status, content_type=content_type.decode("latin-1"), body=body)
            )

    async def _release(self, caller: str, key: str) -> None:
        t = self.table
        async with self._db.sessions.begin() as session:
            await session.execute(delete(t).where(t.c.scope == caller, t.c.key == key))
