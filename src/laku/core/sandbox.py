"""What every provider sandbox shares: a FastAPI app with `/health` and `/ready`."""

from fastapi import FastAPI
from pydantic import BaseModel


class SandboxHealth(BaseModel):
    status: str
    sandbox: str


def create_sandbox_app(name: str, **fastapi_options) -> FastAPI:
    app = FastAPI(title=f"laku {name} sandbox", **fastapi_options)

    @app.get("/health", response_model=SandboxHealth, tags=["ops"])
    @app.get("/ready", response_model=SandboxHealth, tags=["ops"])
    async def health() -> SandboxHealth:
        return SandboxHealth(status="ok", sandbox=name)

    return app
