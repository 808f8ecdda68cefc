"""A flash sale: 10,000 distinct buyers join one group buy that has 5,000 units, over 60 s (a
burst of 2,000 in the first 5 s, then a steady rate), through every hop of the join saga.
Exactly 5,000 units must end up reserved, every other buyer told `insufficient_stock`, and no
one served a 5xx. Prints throughput and latency, each counted from when the buyer arrived (an
open load: a slow platform makes buyers wait, it does not make fewer of them come).

    .venv/bin/python bench/flash_sale.py [--buyers 10000] [--units 5000] [--seconds 60]
        [--burst 2000] [--burst-seconds 5] [--connections 256]
"""

import argparse
import asyncio
import json
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import AdminSession, BenchPlatform, LoadResult, bench_platform, open_group_buy
from laku.testing.catalog import create_seed_catalog

PASSWORD = "flash-sale-password"


async def _buyers(platform: BenchPlatform, count: int, concurrency: int = 32) -> list[str]:
    """`count` new buyer accounts, logged in: their access tokens."""
    tokens: list[str] = [""] * count
    next_index = iter(range(count))

    async def worker(auth: httpx.AsyncClient) -> None:
        for n in next_index:
            email = f"flash-{uuid.uuid4().hex[:10]}-{n}@laku.id"
            body = {"email": email, "password": PASSWORD, "name": f"Pembeli {n}"}
            (await auth.post("/api/auth/register", json=body)).raise_for_status()
            login = await auth.post("/api/auth/login", json={"email": email, "password": PASSWORD})
            tokens[n] = login.raise_for_status().json()["accessToken"]

    async with httpx.AsyncClient(base_url=platform.url("auth"), timeout=60) as auth:
        await asyncio.gather(*(worker(auth) for _ in range(concurrency)))
    return tokens


def arrivals(buyers: int, seconds: float, burst: int, burst_seconds: float) -> list[float]:
    """When each buyer arrives (seconds from the start): `burst` evenly over the first
    `burst_seconds`, the rest evenly over the remaining time."""
    first = [i * burst_seconds / burst for i in range(burst)]
    rest = buyers - burst
    steady = seconds - burst_seconds
    return first + [burst_seconds + i * steady / rest for i in range(rest)]


@dataclass
class Outcome:
    result: LoadResult
    codes: Counter[str] = field(default_factory=Counter)


async def flash_sale(
    url: str, path: str, variant_id: str, tokens: list[str], schedule: list[float], connections: int
) -> Outcome:
    """Each buyer joins once, at their arrival time, over one of `connections` keep-alive
    connections (raw HTTP/1.1: the load generator costs little CPU beside the platform)."""
    host_port = url.removeprefix("http://")
    host, port = host_port.split(":")
    outcome = Outcome(LoadResult("flash sale joins", schedule[-1]))
    queue: asyncio.Queue[int] = asyncio.Queue()
    for buyer in range(len(tokens)):
        queue.put_nowait(buyer)
    payload = json.dumps({"variantId": variant_id, "quantity": 1}).encode()
    start = time.perf_counter()

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            while not queue.empty():
                buyer = queue.get_nowait()
                arrives = start + schedule[buyer]
                await asyncio.sleep(max(0.0, arrives - time.perf_counter()))
                writer.write(
                    (
                        f"POST {path} HTTP/1.1\r\nHost: {host_port}\r\n"
                        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
                        f"Authorization: Bearer {tokens[buyer]}\r\n"
                        f"Idempotency-Key: flash-{buyer}\r\n\r\n"
                    ).encode()
                    + payload
                )
                status_line = await reader.readline()
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                body = await reader.readexactly(length)
                outcome.result.latencies_ms.append((time.perf_counter() - arrives) * 1000)
                status = int(status_line.split()[1])
                outcome.result.statuses[status] = outcome.result.statuses.get(status, 0) + 1
                if status >= 400:
                    outcome.codes[json.loads(body).get("code", "?")] += 1
        finally:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(connections)))
    outcome.result.seconds = time.perf_counter() - start
    return outcome


async def run(platform: BenchPlatform, args: argparse.Namespace) -> bool:
    admin = AdminSession(platform)
    headers = {"Authorization": f"Bearer {admin.admin_token}"}
    catalog = create_seed_catalog(
        admin,
        bundle={},
        stock={"S": args.units},
        max_stock_level=args.units,
        reorder_threshold=0,
    )
    # A MOQ never reached: the session stays open throughout.
    session_id = open_group_buy(admin, catalog, target_moq=args.units * 2, hours=2)

    started = time.perf_counter()
    tokens = await _buyers(platform, args.buyers)
    print(f"{args.buyers} buyers registered and logged in in {time.perf_counter() - started:.0f} s")

    schedule = arrivals(args.buyers, args.seconds, args.burst, args.burst_seconds)
    outcome = await flash_sale(
        platform.url("group-buying"),
        f"/api/group-buying/{session_id}/join",
        catalog.variants["S"],
        tokens,
        schedule,
        args.connections,
    )
    result = outcome.result
    print(result.line())
    print(f"refusals by code: {dict(outcome.codes)}")

    inventory = admin.client("warehouse").get(
        f"/api/inventory/{catalog.variants['S']}", headers=headers
    )
    stock = inventory.raise_for_status().json()
    joined = result.statuses.get(201, 0)
    server_errors = sum(count for status, count in result.statuses.items() if status >= 500)
    refused_for_stock = outcome.codes.get("insufficient_stock", 0)
    print(
        f"joined {joined}, refused for stock {refused_for_stock}, 5xx {server_errors}; "
        f"warehouse: reserved {stock['reservedQuantity']}, available {stock['availableQuantity']}"
    )
    held = (
        joined == args.units
        and stock["reservedQuantity"] == args.units
        and refused_for_stock == args.buyers - args.units
        and server_errors == 0
    )
    print("exactly the units there were, no 5xx: " + ("yes" if held else "NO"))
    return held


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--buyers", type=int, default=10_000)
    parser.add_argument("--units", type=int, default=5_000)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--burst", type=int, default=2_000)
    parser.add_argument("--burst-seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=256)
    args = parser.parse_args()
    with bench_platform() as platform:
        held = asyncio.run(run(platform, args))
    sys.exit(0 if held else 1)


if __name__ == "__main__":
    main()
