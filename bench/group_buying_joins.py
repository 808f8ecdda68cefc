"""Joins per second with 64 concurrent buyers on one session, through every hop of the join
saga (group-buying -> warehouse -> payment -> Xendit sandbox), and the warehouse bench's raw
SQL reservation in the same run; prints both, the ratio, and each process's CPU share and CPU
time per join.

    .venv/bin/python bench/group_buying_joins.py [--clients 64] [--seconds 10] [--workers N]

With `--workers N` the platform runs as `laku up --workers N` does: N processes each serving
every service, the join's calls between services made in process; without, one process per
service, as deployments run it.
"""

import argparse
import asyncio
import sys
import uuid
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (
    AdminSession,
    BenchPlatform,
    CpuMeter,
    bench_platform,
    http_load,
    open_group_buy,
    platform_processes,
    sql_load,
)
from bench.warehouse_reservations import PLENTY, RAW_RESERVATION
from laku.testing.catalog import create_seed_catalog

# The services a join goes through; the notification it leaves (the "joined" message, sent by
# notification-service through the mail and WhatsApp sandboxes) counts under the other services.
HOPS = ("group-buying", "warehouse", "payment", "xendit-sandbox", "auth")


def _buyers(platform: BenchPlatform, count: int) -> list[str]:
    tokens = []
    with httpx.Client(base_url=platform.url("auth"), timeout=30) as auth:
        for n in range(count):
            email = f"bench-buyer-{uuid.uuid4().hex[:8]}-{n}@laku.id"
            body = {"email": email, "password": "bench-password", "name": f"Buyer {n}"}
            auth.post("/api/auth/register", json=body).raise_for_status()
            login = auth.post(
                "/api/auth/login", json={"email": email, "password": "bench-password"}
            )
            tokens.append(login.raise_for_status().json()["accessToken"])
    return tokens


async def run(platform: BenchPlatform, clients: int, seconds: float) -> None:
    admin = AdminSession(platform)
    catalog = create_seed_catalog(
        admin,
        stock={"S": PLENTY, "M": PLENTY},
        max_stock_level=PLENTY,
        reorder_threshold=0,
    )
    # A MOQ far beyond the run: the price stays at the first tier.
    session_id = open_group_buy(admin, catalog, target_moq=1_000_000, hours=1)
    tokens = _buyers(platform, clients)

    cpu = CpuMeter(platform_processes(platform, HOPS))
    joins = await http_load(
        f"HTTP join, every hop ({clients})",
        platform.url("group-buying"),
        f"/api/group-buying/{session_id}/join",
        lambda _client, _n: {"variantId": catalog.variants["S"], "quantity": 1},
        headers_for=lambda client: {"Authorization": f"Bearer {tokens[client]}"},
        clients=clients,
        seconds=seconds,
    )
    usage = cpu.read()
    raw = await sql_load(
        f"raw SQL single-row UPDATE ({clients})",
        platform.database_url,
        RAW_RESERVATION,
        (uuid.UUID(catalog.variants["M"]),),
        clients=clients,
        seconds=seconds,
    )
    print(joins.line())
    print(raw.line())
    print(f"ratio joins / raw SQL: {joins.per_second / raw.per_second:.2f}x")
    print(
        "CPU during the joins (% of one core; 200% is both cores): "
        + ", ".join(f"{name} {percent:.0f}%" for name, percent in usage.items())
    )
    # CPU time over joins completed: what a join costs each process, however loaded the
    # machine (a starved process is slow, not more expensive).
    print(
        "CPU per join (ms): "
        + ", ".join(
            f"{name} {percent * 10 / joins.per_second:.1f}" for name, percent in usage.items()
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=0)
    args = parser.parse_args()
    with bench_platform(workers=args.workers) as platform:
        asyncio.run(run(platform, args.clients, args.seconds))


if __name__ == "__main__":
    main()
