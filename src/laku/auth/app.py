from fastapi import FastAPI

from laku.auth import service
from laku.auth.models import idempotency_keys, rate_limits
from laku.auth.routes import router
from laku.core.app import create_service_app


async def _startup(app: FastAPI) -> None:
    async with app.state.db.sessions() as session:
        await service.ensure_admin(session, app.state.settings)
        app.state.signer = await service.TokenSigner.load_or_create(session)
    # auth verifies its own tokens with the key it holds, without fetching its own JWKS.
    app.state.token_verifier.use_keys(app.state.signer.jwks())


def create_app() -> FastAPI:
    return create_service_app(
        "auth",
        routers=[router],
        idempotency_keys=idempotency_keys,
        startup=_startup,
        rate_limits=rate_limits,
        # The lookup only reads: a retried one is answered again, with nothing kept.
        idempotent_by_body=frozenset({"/api/auth/users/lookup"}),
    )
