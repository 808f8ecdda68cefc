"""What the benchmarks share: a platform on a throwaway database, a lean load generator, and
latency statistics. The load generator speaks raw HTTP/1.1 over keep-alive connections so the
client costs little CPU next to the server it measures (both share this machine's cores)."""

import asyncio
import json
import os
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import psutil

from laku.core.security import service_credential
from laku.core.services import PROCESSES
from laku.core.settings import Settings
from laku.core.supervisor import Supervisor
from laku.testing.catalog import SeedCatalog
from laku.testing.database import LOCAL_SERVER, plain_url, service_role_env, throwaway_database
from laku.testing.platform import SECRETS_ENV, UNREACHED_RATE_LIMITS, settings_from_env

# The admin, and every secret the services need (fresh each run: none has a value in code).
ADMIN = {"LAKU_ADMIN_EMAIL": "bench-admin@laku.id", **SECRETS_ENV}
# Setting up buyers is not what is measured: cheap password hashes.
CHEAP_PASSWORDS = {"LAKU_PASSWORD_HASH_TIME_COST": "1", "LAKU_PASSWORD_HASH_MEMORY_KIB": "1024"}
# One load generator on one address plays thousands of buyers: no rate limit is reached.
NO_RATE_LIMITS = {"LAKU_RATE_LIMITS": json.dumps(UNREACHED_RATE_LIMITS)}


@dataclass
class BenchPlatform:
    settings: Settings
    database_url: str
    supervisor: Supervisor

    def url(self, name: str) -> str:
        return PROCESSES[name].url(self.settings)

    def admin_token(self) -> str:
        response = httpx.post(
            f"{self.url('auth')}/api/auth/login",
            json={"email": ADMIN["LAKU_ADMIN_EMAIL"], "password": ADMIN["LAKU_ADMIN_PASSWORD"]},
        )
        response.raise_for_status()
        return response.json()["accessToken"]

    def service_token(self, service: str) -> str:
        """A token in `service`'s name, as that service obtains it."""
        secret = self.settings.service_secret.get_secret_value()
        response = httpx.post(
            f"{self.url('auth')}/api/auth/service-token",
            json={"serviceName": service, "credential": service_credential(secret, service)},
        )
        response.raise_for_status()
        return response.json()["accessToken"]

    def pid(self, name: str) -> int:
        process = self.supervisor.processes[name].process
        assert process is not None
        return process.pid


class AdminSession:
    """An admin's HTTP clients, shaped like laku.testing's Platform so `laku.testing.catalog`
    builds the benchmark's catalog the same way the tests do."""

    def __init__(self, platform: BenchPlatform):
        self._platform = platform
        self.admin_token = platform.admin_token()
        self._clients: dict[str, httpx.Client] = {}

    def client(self, name: str) -> httpx.Client:
        if name not in self._clients:
            self._clients[name] = httpx.Client(base_url=self._platform.url(name), timeout=30)
        return self._clients[name]


def open_group_buy(admin: AdminSession, catalog: SeedCatalog, target_moq: int, hours: float) -> str:
    """A group buy of the catalog's product at the seed's tiers (95,000 down to 65,000), open
    for `hours`: its id."""
    now = datetime.now(UTC)
    response = admin.client("group-buying").post(
        "/api/group-buying",
        json={
            "productId": catalog.product_id,
            "factoryId": catalog.factory_id,
            "targetMoq": target_moq,
            "priceTier25": 95000,
            "priceTier50": 85000,
            "priceTier75": 75000,
            "priceTier100": 65000,
            "endTime": (now + timedelta(hours=hours)).isoformat(),
            "estimatedCompletionDate": (now + timedelta(days=14)).isoformat(),
        },
        headers={"Authorization": f"Bearer {admin.admin_token}"},
    )
    response.raise_for_status()
    return response.json()["id"]


@contextmanager
def bench_platform(port_offset: int = 28_500, workers: int = 0) -> Iterator[BenchPlatform]:
    """The platform on a new database, dropped afterwards: every service as its own process,
    as deployments run it, or (`workers`) as `laku up --workers` runs it: that many processes
    each serving every service, calls between services made in process."""
    server = os.environ.get("LAKU_DATABASE_URL", LOCAL_SERVER)
    with throwaway_database(server) as url:
        env = {
            "LAKU_DATABASE_URL": url,
            "LAKU_PORT_OFFSET": str(port_offset),
            **ADMIN,
            **CHEAP_PASSWORDS,
            **NO_RATE_LIMITS,
            # As in production (the Kubernetes ConfigMap): JSON log lines, cheaper to write
            # than the console's aligned ones.
            "LAKU_LOG_JSON": "true",
        }
        settings = settings_from_env(env)
        role_env = service_role_env(url)
        if workers:
            urls = {name: each["LAKU_DATABASE_URL"] for name, each in role_env.items()}
            every_url = {"LAKU_DATABASE_URL": "", "LAKU_DATABASE_URLS": json.dumps(urls)}
            role_env = {f"host-{n}": every_url for n in range(1, workers + 1)}
        supervisor = Supervisor(settings, env=env, service_env=role_env, hosts=workers or None)
        supervisor.start()
        try:
            supervisor.wait_ready()
            yield BenchPlatform(settings, url, supervisor)
        finally:
            supervisor.stop()


@dataclass
class LoadResult:
    label: str
    seconds: float
    latencies_ms: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)

    @property
    def per_second(self) -> float:
        return len(self.latencies_ms) / self.seconds

    def percentile(self, p: float) -> float:
        return statistics.quantiles(self.latencies_ms, n=100, method="inclusive")[int(p) - 1]

    def line(self) -> str:
        return (
            f"{self.label:<34} {self.per_second:9.0f} /s   p50 {self.percentile(50):6.1f} ms   "
            f"p99 {self.percentile(99):6.1f} ms   n={len(self.latencies_ms)} {self.statuses}"
        )


async def http_load(
    label: str,
    url: str,
    path: str,
    body_for: Callable[[int, int], dict],
    *,
    headers_for: Callable[[int], dict[str, str]],
    clients: int,
    seconds: float,
) -> LoadResult:
    """`clients` connections, each POSTing `body_for(client, n)` with `headers_for(client)`
    back to back for `seconds`."""
    host_port = url.removeprefix("http://")
    host, port = host_port.split(":")
    result = LoadResult(label, seconds)
    deadline = time.perf_counter() + seconds

    async def client(index: int) -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers_for(index).items())
        n = 0
        try:
            while time.perf_counter() < deadline:
                payload = json.dumps(body_for(index, n)).encode()
                request = (
                    f"POST {path} HTTP/1.1\r\nHost: {host_port}\r\n"
                    f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
                    f"{extra}\r\n"
                ).encode() + payload
                started = time.perf_counter()
                writer.write(request)
                status_line = await reader.readline()
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                await reader.readexactly(length)
                result.latencies_ms.append((time.perf_counter() - started) * 1000)
                status = int(status_line.split()[1])
                result.statuses[status] = result.statuses.get(status, 0) + 1
                n += 1
        finally:
            writer.close()

    await asyncio.gather(*(client(i) for i in range(clients)))
    return result


async def sql_load(
    label: str, database_url: str, statement: str, args: tuple, *, clients: int, seconds: float
) -> LoadResult:
    """`clients` connections, each running `statement` (autocommit) back to back."""
    result = LoadResult(label, seconds)
    pool = await asyncpg.create_pool(plain_url(database_url), min_size=clients, max_size=clients)
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        async with pool.acquire() as conn:
            prepared = await conn.prepare(statement)
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                await prepared.fetch(*args)
                result.latencies_ms.append((time.perf_counter() - started) * 1000)

    try:
        await asyncio.gather(*(client() for _ in range(clients)))
    finally:
        await pool.close()
    result.statuses = {200: len(result.latencies_ms)}
    return result


class CpuMeter:
    """CPU time of groups of processes over an interval, in percent of one core, and of the
    whole machine. A group is found again when read, so PostgreSQL backends that connect
    during the interval count in full (a pool opens its connections as load comes)."""

    def __init__(self, groups: Callable[[], dict[str, list[psutil.Process]]]):
        self._groups = groups
        self._started = time.monotonic()
        self._machine = _busy_seconds(psutil.cpu_times())
        self._seconds = {
            process.pid: seconds
            for group in groups().values()
            for process in group
            if (seconds := _cpu_seconds(process)) is not None
        }

    def read(self) -> dict[str, float]:
        elapsed = time.monotonic() - self._started
        usage = {}
        for name, group in self._groups().items():
            used = 0.0
            for process in group:
                if (seconds := _cpu_seconds(process)) is not None:
                    used += seconds - self._seconds.get(process.pid, 0.0)
            usage[name] = 100 * used / elapsed
        usage["whole machine"] = 100 * (_busy_seconds(psutil.cpu_times()) - self._machine) / elapsed
        return usage


def _cpu_seconds(process: psutil.Process) -> float | None:
    # A PostgreSQL backend of another client may end at any moment.
    try:
        times = process.cpu_times()
    except psutil.Error:
        return None
    return times.user + times.system


def _busy_seconds(times: Any) -> float:
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


def platform_processes(
    platform: BenchPlatform, named: tuple[str, ...]
) -> Callable[[], dict[str, list[psutil.Process]]]:
    """The groups a bench reports: each of `named`, every other service and sandbox together,
    PostgreSQL (its backends as they are when read) and this load generator."""

    def groups() -> dict[str, list[psutil.Process]]:
        processes = {
            name: psutil.Process(platform.pid(name)) for name in platform.supervisor.processes
        }
        reported = reported_processes(platform, named)
        return {
            **{name: [processes[name]] for name in reported},
            "other services": [p for name, p in processes.items() if name not in reported],
            "postgres": postgres_processes(),
            "load generator": [psutil.Process()],
        }

    return groups


def reported_processes(platform: BenchPlatform, named: tuple[str, ...]) -> list[str]:
    """The platform's processes a bench reports on its own: the services `named`, or, where
    every process serves every service (`laku up --workers`), each process."""
    return [name for name in named if name in platform.supervisor.processes] or list(
        platform.supervisor.processes
    )


def postgres_processes() -> list[psutil.Process]:
    """Every PostgreSQL process on the machine (the benchmarks assume they run alone)."""
    return [
        process
        for process in psutil.process_iter(["name"])
        if (process.info["name"] or "").startswith("postgres")
    ]
