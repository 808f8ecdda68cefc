"""Graceful shutdown: SIGTERM to group-buying while buyers keep joining. It stops accepting,
lets the joins in flight finish, stops its relay and close schedule, then closes its pools: no
join is cut off half-way and nothing is logged as an error after the signal."""

import json
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from laku.testing.catalog import create_seed_catalog
from laku.testing.platform import Account, Platform
from tests.group_buys import open_group_buy
from tests.support import eventually

WORKERS = 6
BUYERS = 90


@dataclass
class Attempt:
    buyer: Account
    started: float
    ended: float
    status: int | None
    error: str | None


def _log_lines_after(path: Path, offset: int) -> list[str]:
    with path.open("rb") as log:
        log.seek(offset)
        return log.read().decode(errors="replace").splitlines()


def _is_error(line: str) -> bool:
    try:
        record = json.loads(line)
    except ValueError:  # uvicorn's own lines and tracebacks are plain text
        return "ERROR" in line or "Traceback" in line or "CRITICAL" in line
    return record.get("level") in ("error", "critical", "exception")


def test_sigterm_during_joins_finishes_every_join_in_flight(platform: Platform) -> None:
    catalog = create_seed_catalog(
        platform, stock={"S": 500, "M": 500, "L": 500}, max_stock_level=500
    )
    session = open_group_buy(platform, catalog, target_moq=400)
    medium = catalog.variants["M"]
    buyers = [platform.new_buyer() for _ in range(BUYERS)]
    url = f"{platform.url('group-buying')}/api/group-buying/{session['id']}/join"
    entry = platform.supervisor.processes["group-buying"]
    assert entry.process is not None
    log_path = platform.supervisor.log_dir / "group-buying.log"

    attempts: list[Attempt] = []
    queue = list(buyers)
    lock = threading.Lock()
    signalled = threading.Event()

    def join_until_refused() -> None:
        while True:
            with lock:
                if not queue:
                    return
                buyer = queue.pop()
            started = time.monotonic()
            try:
                # A connection of its own per join: the server's closing of idle keep-alive
                # connections at shutdown is then not mistaken for a join cut off.
                with httpx.Client(timeout=30.0, headers={"connection": "close"}) as client:
                    response = client.post(
                        url, json={"variantId": medium, "quantity": 1}, headers=buyer.headers
                    )
                status, error = response.status_code, None
            except httpx.HTTPError as exc:
                status, error = None, type(exc).__name__
            with lock:
                attempts.append(Attempt(buyer, started, time.monotonic(), status, error))
            if error is not None and signalled.is_set():
                return

    workers = [threading.Thread(target=join_until_refused) for _ in range(WORKERS)]
    for worker in workers:
        worker.start()
    eventually(lambda: len(attempts) >= 10, timeout=60, every=0.01, what="the joins starting")

    log_offset = log_path.stat().st_size
    signalled_at = time.monotonic()
    signalled.set()
    entry.process.send_signal(signal.SIGTERM)
    exit_code = entry.process.wait(timeout=30)
    for worker in workers:
        worker.join(timeout=60)

    try:
        # uvicorn finishes its shutdown, then ends by the signal it caught (so -SIGTERM).
        assert exit_code == -signal.SIGTERM
        after = _log_lines_after(log_path, log_offset)
        assert any("Application shutdown complete" in line for line in after), after
        in_flight = [a for a in attempts if a.started < signalled_at < a.ended]
        assert [a for a in in_flight if a.status == 201], "no join was in flight at the signal"
        served = [a for a in attempts if a.status is not None]
        assert all(a.status == 201 for a in served), [a.status for a in served]

        # A join that got no answer was refused before it began: it left no participant. Every
        # answered one left exactly its own.
        participants = platform.sql(
            "SELECT user_id::text FROM group_buying.group_participants WHERE session_id = $1",
            session["id"],
        )
        joined = sorted(row["user_id"] for row in participants)
        assert joined == sorted(a.buyer.id for a in served)
        errors_after = [line for line in after if _is_error(line)]
        assert errors_after == []
    finally:
        platform.supervisor.start_one("group-buying")
        platform.supervisor.wait_ready()
