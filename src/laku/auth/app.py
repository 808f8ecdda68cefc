"""auth-service (port 3001): users, credentials, roles, sessions, token signing keys."""

import asyncio

import structlog
from fastapi import FastAPI

from laku.auth import keys, service, sessions
from laku.auth.models import idempotency_keys, rate_limits
from laku.auth.routes import router
from laku.core.app import create_service_app, run_in_background
from laku.core.retention import Purge

log = structlog.get_logger()


async def _load_signer(app: FastAPI) -> None:
    async with app.state.db.sessions() as session:
        app.state.signer = await keys.TokenSigner.load(
            session, app.state.key_cipher, app.state.settings
        )
    # auth verifies its own tokens with the keys it holds, without fetching its own JWKS.
    app.state.token_verifier.use_keys(app.state.signer.jwks())


async def _reload_signer(app: FastAPI) -> None:
    """Picks up a rotation (`laku keys rotate`) and stops publishing keys whose tokens are all
    expired."""
    while True:
        await asyncio.sleep(app.state.settings.signing_key_reload_seconds)
        try:
            await _load_signer(app)
        except Exception:  # the database away for a moment: the keys held go on signing
            log.warning("signing_keys_reload_failed", exc_info=True)


async def _startup(app: FastAPI) -> None:
    app.state.key_cipher = keys.KeyCipher.from_settings(app.state.settings)
    async with app.state.db.sessions() as session:
        await service.ensure_admin(session, app.state.settings)
        await keys.ensure_key(session, app.state.key_cipher)
    await _load_signer(app)
    run_in_background(app, _reload_signer(app), "signing-keys-reload")


def _retention(app: FastAPI) -> dict[str, Purge]:
    state = app.state
    return {"sessions": lambda: sessions.purge_ended(state.db, state.settings)}


def create_app() -> FastAPI:
    return create_service_app(
        "auth",
        [router],
        idempotency_keys,
        startup=_startup,
        retention=_retention,
        rate_limits=rate_limits,
        # The lookup only reads: a retried one is answered again, with nothing kept.
        idempotent_by_body=frozenset({"/api/auth/users/lookup"}),
    )
