"""Reservations per second on one hot variant: over HTTP through warehouse-service, and the same
reservation as a single-row UPDATE through asyncpg, in the same run; prints both and the ratio.

    .venv/bin/python bench/warehouse_reservations.py [--clients 64] [--seconds 10] [--workers N]

With `--workers N` warehouse-service is served by N processes sharing its port, as
`laku up --workers N` runs it; without, by its own single process, as deployments run it.
"""

import argparse
import asyncio
import sys
import uuid
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (
    AdminSession,
    BenchPlatform,
    CpuMeter,
    bench_platform,
    http_load,
    platform_processes,
    reported_processes,
    sql_load,
)
from laku.testing.catalog import create_seed_catalog

PLENTY = 10**9

RAW_RESERVATION = """
UPDATE warehouse.warehouse_inventory
   SET reserved_quantity = reserved_quantity + 1
 WHERE variant_id = $1 AND quantity - reserved_quantity >= 1
RETURNING quantity - reserved_quantity
"""


async def run(platform: BenchPlatform, clients: int, seconds: float) -> None:
    catalog = create_seed_catalog(
        AdminSession(platform),
        stock={"S": PLENTY, "M": PLENTY},
        max_stock_level=PLENTY,
        reorder_threshold=0,
    )
    token = platform.service_token("group-buying")  # who reserves stock
    run_id = uuid.uuid4().hex[:8]

    def reservation(client: int, n: int) -> dict:
        return {
            "reference": f"bench:{run_id}:{client}:{n}",
            "variantId": catalog.variants["S"],
            "quantity": 1,
        }

    cpu = CpuMeter(platform_processes(platform, ("warehouse",)))
    http = await http_load(
        f"HTTP POST /api/reservations ({clients})",
        platform.url("warehouse"),
        "/api/reservations",
        reservation,
        headers_for=lambda _: {"Authorization": f"Bearer {token}"},
        clients=clients,
        seconds=seconds,
    )
    http_cpu = cpu.read()
    raw = await sql_load(
        f"raw SQL single-row UPDATE ({clients})",
        platform.database_url,
        RAW_RESERVATION,
        (uuid.UUID(catalog.variants["M"]),),
        clients=clients,
        seconds=seconds,
    )
    print(http.line())
    print(raw.line())
    print(f"ratio HTTP / raw SQL: {http.per_second / raw.per_second:.2f}x")
    print(
        "CPU during the HTTP run (% of one core): "
        + ", ".join(f"{name} {percent:.0f}%" for name, percent in http_cpu.items())
    )
    rss = {
        name: psutil.Process(platform.pid(name)).memory_info().rss
        for name in reported_processes(platform, ("warehouse",))
    }
    print("RSS: " + ", ".join(f"{name} {size / 2**20:.0f} MiB" for name, size in rss.items()))


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
