"""A platform of real service processes for tests and benches: its secrets and settings, free
ports, and the accounts that call it."""

import asyncio
import os
import random
import secrets
import socket
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from unittest.mock import patch

import asyncpg
import httpx

from laku.core.http import ServiceTokenSource
from laku.core.secrets import SECRET_SETTINGS, env_name, generate_secret
from laku.core.security import service_credential
from laku.core.services import PROCESSES
from laku.core.settings import RateLimits, Settings
from laku.core.supervisor import Supervisor
from laku.providers.smtp.client import SANDBOX_SMTP_PORT
from laku.testing.database import plain_url, run

ADMIN_EMAIL = "admin-tests@laku.id"
ADMIN_PASSWORD = secrets.token_urlsafe(24)
# Every secret setting, fresh each run: the test platforms are given theirs explicitly, as a
# production one is, and never read or write a data folder's.
SECRETS_ENV = {env_name(name): generate_secret(name) for name in SECRET_SETTINGS} | {
    env_name("admin_password"): ADMIN_PASSWORD
}


def settings_from_env(env: dict[str, str]) -> Settings:
    """The settings a process started with these `LAKU_*` variables reads, read the way it
    reads them (JSON for structured settings)."""
    with patch.dict(os.environ, env):
        return Settings(_env_file=None)


# The suite registers hundreds of buyers and logs in and joins thousands of times, all from
# 127.0.0.1: its platforms' rate limits are never reached (LAKU_RATE_LIMITS). Failed logins
# per (account, address) keep their real limit. tests/test_rate_limits.py runs a platform with
# the real limits.
UNREACHED_RATE_LIMITS = {
    name: {"limit": 1_000_000_000, "seconds": 1} for name in RateLimits.model_fields
}


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def free_port_offset() -> int:
    """An offset that puts every seed port on a free port, away from a running `make up` and
    below Linux's range for outgoing connections (32768+), whose ports look free but bind badly."""
    for _ in range(50):
        offset = random.randrange(10_000, 28_000, 100)
        ports = [spec.port + offset for spec in PROCESSES.values()]
        if all(_port_free(port) for port in [*ports, SANDBOX_SMTP_PORT + offset]):
            return offset
    raise RuntimeError("no free port range found")


@dataclass
class Platform:
    """The services running as real processes for the test session."""

    settings: Settings
    database_url: str
    supervisor: Supervisor
    clients: dict[str, httpx.Client] = field(default_factory=dict)
    _tokens: dict[str, tuple[str, float]] = field(default_factory=dict)

    def url(self, service: str) -> str:
        return PROCESSES[service].url(self.settings)

    def client(self, service: str) -> httpx.Client:
        if service not in self.clients:
            # Idle connections are dropped before uvicorn closes them (after 5 s): a request
            # never goes out on a connection the server is closing at that moment.
            limits = httpx.Limits(keepalive_expiry=2.0)
            self.clients[service] = httpx.Client(
                base_url=self.url(service), timeout=10.0, limits=limits
            )
        return self.clients[service]

    def login(self, email: str, password: str) -> str:
        response = self.client("auth").post(
            "/api/auth/login", json={"email": email, "password": password}
        )
        response.raise_for_status()
        return response.json()["accessToken"]

    @property
    def admin_token(self) -> str:
        """Logged in again when half its life has passed: access tokens are short-lived."""
        token, renew_at = self._tokens.get("admin", ("", 0.0))
        if time.monotonic() >= renew_at:
            token = self.login(ADMIN_EMAIL, ADMIN_PASSWORD)
            renew_at = time.monotonic() + self.settings.access_token_ttl_seconds / 2
            self._tokens["admin"] = (token, renew_at)
        return token

    def service_credential(self, service: str) -> str:
        """What `service` presents to auth-service for a token in its own name."""
        return service_credential(self.settings.service_secret.get_secret_value(), service)

    def service_token(self, service: str) -> str:
        """A `service` token naming `service` as its caller, as that service obtains it;
        obtained again when half its life has passed."""
        key = f"service:{service}"
        token, renew_at = self._tokens.get(key, ("", 0.0))
        if time.monotonic() >= renew_at:
            response = self.client("auth").post(
                "/api/auth/service-token",
                json={"serviceName": service, "credential": self.service_credential(service)},
            )
            response.raise_for_status()
            token = response.json()["accessToken"]
            renew_at = time.monotonic() + response.json()["expiresIn"] / 2
            self._tokens[key] = (token, renew_at)
        return token

    def service_headers(self, service: str) -> dict[str, str]:
        return bearer(self.service_token(service))

    def service_token_source(self, http: httpx.AsyncClient, service: str) -> ServiceTokenSource:
        """The token source a service's typed clients use, for `service`."""
        return ServiceTokenSource(http, self.url("auth"), service, self.service_credential(service))

    def new_buyer(self, name: str = "Buyer") -> "Account":
        email = f"buyer-{uuid.uuid4().hex[:10]}@laku.id"
        password = "buyer-password"
        response = self.client("auth").post(
            "/api/auth/register", json={"email": email, "password": password, "name": name}
        )
        response.raise_for_status()
        return Account(response.json()["id"], email, self.login(email, password))

    def sql(self, query: str, *args: object) -> list[asyncpg.Record]:
        """Run one statement on the test database (to look at, or set up, what HTTP cannot)."""

        async def execute() -> list[asyncpg.Record]:
            conn = await asyncpg.connect(plain_url(self.database_url))
            try:
                return await conn.fetch(query, *args)
            finally:
                await conn.close()

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return run(execute())
        # Called under a running loop (Playwright's sync API runs one): in a thread of its own.
        with ThreadPoolExecutor(max_workers=1) as thread:
            return thread.submit(run, execute()).result()

    def close(self) -> None:
        for client in self.clients.values():
            client.close()


@contextmanager
def running_platform(
    env: dict[str, str],
    database_url: str,
    *,
    log_dir: Path,
    service_env: dict[str, dict[str, str]] | None = None,
    services: list[str] | None = None,
) -> Iterator[Platform]:
    """Start the processes (every one, or `services`) with `env` (and each its `service_env`),
    wait until they answer, and stop them afterwards."""
    supervisor = Supervisor(
        settings_from_env(env),
        env=env,
        service_env=service_env or {},
        services=services or list(PROCESSES),
        log_dir=log_dir,
    )
    supervisor.start()
    running = Platform(
        settings=supervisor.settings, database_url=database_url, supervisor=supervisor
    )
    try:
        supervisor.wait_ready()
        yield running
    finally:
        running.close()
        supervisor.stop()


@dataclass(frozen=True)
class Account:
    id: str
    email: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.token)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass(frozen=True)
class FixedToken:
    """A token source handing out one token (an admin's, for a typed client in a test)."""

    value: str

    async def token(self) -> str:
        return self.value
