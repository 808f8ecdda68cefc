"""Closing one group buy of 10,000 paid participants: the seconds process-expired takes, and the
HTTP calls and database work it costs per participant.

    .venv/bin/python bench/close_session.py [--participants 10000]

Ten thousand real joins would take longer than the close itself, so the paid participants are
written straight into each service's tables of the benchmark's throwaway database (marked
"bench setup" below): participants in group_buying, their payments (paid, escrow held) in
payment, their reservations (grouped by the session) and matching stock in warehouse. The
catalog and the session are made over HTTP as an admin would. The i-th participant paid the
tier of the fill before it, so the close refunds each of them the difference to the 100% tier.

HTTP calls are counted from the services' request logs: those carrying the close's request id
(every call the close makes, and the calls those make), and everything the services served
until the refunds reached the wallets (payment-service credits them through its outbox).
pg_stat_statements is not loaded on the benchmark's server, so database work is counted with
pg_stat_database: transactions and rows touched in the benchmark's database.
"""

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import ADMIN, CHEAP_PASSWORDS, NO_RATE_LIMITS, AdminSession, BenchPlatform
from laku.core.supervisor import Supervisor
from laku.group_buying.rules import TierPrices, unit_price
from laku.testing.catalog import SIZES, create_seed_catalog
from laku.testing.database import LOCAL_SERVER, plain_url, service_role_env, throwaway_database
from laku.testing.platform import settings_from_env

TIERS = TierPrices(tier_25=95000, tier_50=85000, tier_75=75000, tier_100=65000)
STOCK_PER_VARIANT = 5_000
# How long the close and then its refunds are waited for.
CREDIT_WAIT_SECONDS = 900
REQUEST_ID = f"bench-close-{uuid.uuid4().hex[:8]}"
PG_COUNTERS = (
    "xact_commit",
    "xact_rollback",
    "tup_returned",
    "tup_fetched",
    "tup_inserted",
    "tup_updated",
    "tup_deleted",
)


@contextmanager
def logged_platform(log_dir: Path, port_offset: int = 28_500) -> Iterator[BenchPlatform]:
    """Like bench.harness.bench_platform, keeping every service's JSON log under `log_dir`
    and with group-buying's scheduled close off, so the measured call is the one that closes."""
    server = os.environ.get("LAKU_DATABASE_URL", LOCAL_SERVER)
    with throwaway_database(server) as url:
        env = {
            "LAKU_DATABASE_URL": url,
            "LAKU_PORT_OFFSET": str(port_offset),
            "LAKU_LOG_JSON": "true",
            "LAKU_CLOSE_INTERVAL_SECONDS": "0",
            **ADMIN,
            **CHEAP_PASSWORDS,
            **NO_RATE_LIMITS,
        }
        settings = settings_from_env(env)
        supervisor = Supervisor(
            settings, env=env, service_env=service_role_env(url), log_dir=log_dir
        )
        supervisor.start()
        try:
            supervisor.wait_ready()
            yield BenchPlatform(settings, url, supervisor)
        finally:
            supervisor.stop()


@dataclass(frozen=True)
class BenchSession:
    id: uuid.UUID
    product_id: uuid.UUID
    variants: dict[str, uuid.UUID]


def open_session(platform: BenchPlatform, participants: int) -> BenchSession:
    admin = AdminSession(platform)
    catalog = create_seed_catalog(
        admin,
        stock={size: STOCK_PER_VARIANT for size in SIZES},
        max_stock_level=STOCK_PER_VARIANT * 2,
        reorder_threshold=0,
    )
    end = datetime.now(UTC) + timedelta(hours=1)
    response = admin.client("group-buying").post(
        "/api/group-buying",
        json={
            "productId": catalog.product_id,
            "factoryId": catalog.factory_id,
            "targetMoq": participants,  # one unit each: the group ends at 100%
            "priceTier25": TIERS.tier_25,
            "priceTier50": TIERS.tier_50,
            "priceTier75": TIERS.tier_75,
            "priceTier100": TIERS.tier_100,
            "endTime": end.isoformat(),
            "estimatedCompletionDate": (end + timedelta(days=14)).isoformat(),
        },
        headers={"Authorization": f"Bearer {admin.admin_token}"},
    )
    response.raise_for_status()
    return BenchSession(
        uuid.UUID(response.json()["id"]),
        uuid.UUID(catalog.product_id),
        {size: uuid.UUID(variant_id) for size, variant_id in catalog.variants.items()},
    )


async def insert_paid_participants(database_url: str, session: BenchSession, count: int) -> None:
    """Bench setup, straight into each service's tables: `count` paid participants of one unit
    each, as if each had joined and paid, and the session past its end time."""
    now = datetime.now(UTC)
    participants, payments, reservations, movements = [], [], [], []
    reserved: Counter[uuid.UUID] = Counter()
    for n in range(count):
        size = SIZES[n % len(SIZES)]
        variant_id = session.variants[size]
        price = unit_price(TIERS, n, count)  # the fill before this join, for every variant
        participant_id, payment_id, user_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        reference = f"participant:{participant_id}"
        invoice_url = f"http://xendit.invalid/web/bench-{n}"
        participants.append(
            (
                participant_id,
                session.id,
                user_id,
                variant_id,
                1,
                price,
                price,
                "paid",
                reference,
                payment_id,
                invoice_url,
                now,
                now,
                now,
            )
        )
        payments.append(
            (
                payment_id,
                f"PAY-BENCH-{n:08d}",
                reference,
                user_id,
                price,
                "IDR",
                "bench join",
                "paid",
                "held",
                f"bench-invoice-{n}",
                invoice_url,
                now + timedelta(hours=1),
                now,
                0,
                now,
                now,
            )
        )
        reservations.append(
            (uuid.uuid4(), reference, f"session:{session.id}", variant_id, 1, "reserved", now, now)
        )
        movements.append((variant_id, "reserve", 0, 1, reference, now))
        reserved[variant_id] += 1

    conn = await asyncpg.connect(plain_url(database_url))
    try:
        async with conn.transaction():
            await conn.copy_records_to_table(
                "group_participants",
                schema_name="group_buying",
                records=participants,
                columns=[
                    "id",
                    "session_id",
                    "user_id",
                    "variant_id",
                    "quantity",
                    "unit_price",
                    "total_price",
                    "status",
                    "reservation_reference",
                    "payment_id",
                    "payment_url",
                    "paid_at",
                    "created_at",
                    "updated_at",
                ],
            )
            await conn.execute(
                "UPDATE group_buying.group_buying_sessions SET paid_quantity = $2, "
                "status = 'moq_reached', end_time = now() - interval '1 second' WHERE id = $1",
                session.id,
                count,
            )
            await conn.copy_records_to_table(
                "payments",
                schema_name="payment",
                records=payments,
                columns=[
                    "id",
                    "payment_code",
                    "reference",
                    "user_id",
                    "amount",
                    "currency",
                    "description",
                    "status",
                    "escrow_status",
                    "xendit_invoice_id",
                    "invoice_url",
                    "expires_at",
                    "paid_at",
                    "refunded_amount",
                    "created_at",
                    "updated_at",
                ],
            )
            await conn.copy_records_to_table(
                "reservations",
                schema_name="warehouse",
                records=reservations,
                columns=[
                    "id",
                    "reference",
                    "group_reference",
                    "variant_id",
                    "quantity",
                    "status",
                    "created_at",
                    "updated_at",
                ],
            )
            await conn.copy_records_to_table(
                "stock_movements",
                schema_name="warehouse",
                records=movements,
                columns=[
                    "variant_id",
                    "kind",
                    "quantity_delta",
                    "reserved_delta",
                    "reference",
                    "created_at",
                ],
            )
            await conn.executemany(
                "UPDATE warehouse.warehouse_inventory "
                "SET reserved_quantity = reserved_quantity + $2 WHERE variant_id = $1",
                list(reserved.items()),
            )
        await conn.execute("ANALYZE")  # plans for tables that just grew by 10,000 rows
    finally:
        await conn.close()


async def pg_counters(database_url: str) -> dict[str, int]:
    conn = await asyncpg.connect(plain_url(database_url))
    try:
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        row = await conn.fetchrow(
            f"SELECT {', '.join(PG_COUNTERS)} FROM pg_stat_database "
            "WHERE datname = current_database()"
        )
        assert row is not None
        return dict(row)
    finally:
        await conn.close()


async def refunds_credited(database_url: str) -> int:
    conn = await asyncpg.connect(plain_url(database_url))
    try:
        return await conn.fetchval(
            "SELECT count(*) FROM payment.refunds WHERE status = 'succeeded'"
        )
    finally:
        await conn.close()


def request_log(log_dir: Path) -> list[dict[str, Any]]:
    """Every request the services logged (`service` named by its log file)."""
    served = []
    for path in sorted(log_dir.glob("*.log")):
        for line in path.read_text().splitlines():
            if line.startswith("{"):
                entry = json.loads(line)
                if entry.get("event") == "request":
                    served.append({**entry, "service": path.stem})
    return served


def by_call(entries: list[dict[str, Any]]) -> str:
    """Calls per service and path: how many, and the seconds they took (all, the longest)."""
    calls: dict[str, list[float]] = {}
    for e in entries:
        calls.setdefault(f"{e['service']} {e['method']} {e['path']}", []).append(e["ms"] / 1000)
    return "\n".join(
        f"  {len(took):5d}  {sum(took):7.2f} s  (longest {max(took):6.2f} s)  {call}"
        for call, took in sorted(calls.items())
    )


async def run(platform: BenchPlatform, log_dir: Path, count: int) -> None:
    session = open_session(platform, count)
    await insert_paid_participants(platform.database_url, session, count)
    admin_token = AdminSession(platform).admin_token
    await asyncio.sleep(1.5)  # idle, so the counters below start from settled statistics

    idle_before = await pg_counters(platform.database_url)
    await asyncio.sleep(5)
    idle_after = await pg_counters(platform.database_url)
    load_before = load_average()
    idle_xacts_per_second = (idle_after["xact_commit"] - idle_before["xact_commit"]) / 5

    cpu_before = await cpu_seconds(platform)
    before = await pg_counters(platform.database_url)
    window_start = datetime.now(UTC)
    started = time.perf_counter()
    async with httpx.AsyncClient(
        base_url=platform.url("group-buying"), timeout=CREDIT_WAIT_SECONDS
    ) as http:
        response = await http.post(
            "/api/group-buying/process-expired",
            headers={"Authorization": f"Bearer {admin_token}", "X-Request-ID": REQUEST_ID},
        )
    seconds = time.perf_counter() - started
    response.raise_for_status()
    [closed] = response.json()["processed"]
    print(f"process-expired answered {closed['outcome']} after {seconds:.2f} s", flush=True)
    credited_seconds: float | None = None
    while time.perf_counter() - started < CREDIT_WAIT_SECONDS:
        if await refunds_credited(platform.database_url) >= count:
            credited_seconds = time.perf_counter() - started
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.5)  # backends report their statistics within a second
    after = await pg_counters(platform.database_url)
    load_after = load_average()
    cpu_after = await cpu_seconds(platform)

    served = request_log(log_dir)
    of_close = [e for e in served if e.get("request_id") == REQUEST_ID]
    in_window = [e for e in served if datetime.fromisoformat(e["timestamp"]) >= window_start]
    delta = {name: after[name] - before[name] for name in PG_COUNTERS}

    print(f"participants                      {count}")
    print(f"outcome                           {closed['outcome']}")
    print(f"process-expired                   {seconds:.2f} s")
    if credited_seconds is None:
        print(f"refunds in wallets (outbox)       not all within {CREDIT_WAIT_SECONDS} s")
    else:
        print(f"refunds in wallets (outbox)       {credited_seconds:.2f} s after the call began")
    print(f"load average (1, 5, 15 min)       {load_before} before, {load_after} after")
    print(
        f"HTTP requests of the close        {len(of_close)} "
        f"({len(of_close) / count:.4f} per participant)"
    )
    print(by_call(of_close))
    print(
        f"HTTP requests until credited      {len(in_window)} "
        f"({len(in_window) / count:.4f} per participant; the rest is outbox work)"
    )
    print(by_call([e for e in in_window if e.get("request_id") != REQUEST_ID]))
    print(
        f"transactions                      {delta['xact_commit'] + delta['xact_rollback']} "
        f"({(delta['xact_commit'] + delta['xact_rollback']) / count:.3f} per participant; "
        f"idle outbox polling adds about {idle_xacts_per_second:.0f}/s)"
    )
    for name in PG_COUNTERS[2:]:
        print(f"{name:<33} {delta[name]} ({delta[name] / count:.1f} per participant)")
    print(
        "CPU seconds until credited        "
        + ", ".join(f"{name} {used:.1f}" for name, used in cpu_used(cpu_before, cpu_after).items())
    )
    print(
        "peak resident memory (since start)  "
        + ", ".join(f"{name} {peak_rss_mib(platform.pid(name)):.0f} MiB" for name in CLOSE_HOPS)
    )


async def cpu_seconds(platform: BenchPlatform) -> dict[str, float]:
    """CPU time (user and system) each process of the close has used so far, and that of the
    PostgreSQL backends connected to the benchmark's database (a backend that ended since
    is not counted: the services keep theirs in pools): what the close costs whatever else
    runs on the machine."""
    conn = await asyncpg.connect(plain_url(platform.database_url))
    try:
        backends = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()"
        )
    finally:
        await conn.close()
    used = {name: _cpu(platform.pid(name)) for name in CLOSE_HOPS}
    return used | {f"postgres {row['pid']}": _cpu(row["pid"]) for row in backends}


def cpu_used(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Per process of the close, and for PostgreSQL's backends together, the CPU seconds
    between two readings of `cpu_seconds`."""
    used = dict.fromkeys((*CLOSE_HOPS, "postgres"), 0.0)
    for name, seconds in after.items():
        used[name.split()[0]] += seconds - before.get(name, 0.0)
    return used


def _cpu(pid: int) -> float:
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.NoSuchProcess:
        return 0.0
    return times.user + times.system


def load_average() -> str:
    """The machine's load: the benchmark shares it, so its figures are read against this."""
    return " ".join(f"{load:.1f}" for load in os.getloadavg())


# The processes the close and its refunds run through.
CLOSE_HOPS = ("group-buying", "payment", "wallet", "warehouse", "order")


def peak_rss_mib(pid: int) -> float:
    """The process's high-water mark of resident memory (Linux's VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise LookupError(f"no VmHWM for process {pid}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--participants", type=int, default=10_000)
    parser.add_argument(
        "--port-offset",
        type=int,
        default=28_500,
        help="where the services listen: another offset runs beside another benchmark",
    )
    parser.add_argument("--keep-logs", type=Path, help="keep the services' logs in this folder")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="laku-close-bench-") as logs:
        log_dir = args.keep_logs or Path(logs)
        log_dir.mkdir(parents=True, exist_ok=True)
        with logged_platform(log_dir, args.port_offset) as platform:
            asyncio.run(run(platform, log_dir, args.participants))


if __name__ == "__main__":
    main()
