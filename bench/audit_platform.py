"""`laku audit` over a platform of 100,000 paid participants: the seconds it takes and the HTTP
requests it makes.

    .venv/bin/python bench/audit_platform.py [--participants 100000]

The participants are written straight into each service's tables, as `close_session.py` does
(paid, escrow held, their stock reserved under the session), into an open session; the audit
then runs as `laku audit` runs it, through the services' clients. Requests are counted from
the services' request logs.
"""

import argparse
import asyncio
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.close_session import (
    insert_paid_participants,
    logged_platform,
    open_session,
    request_log,
)
from bench.harness import BenchPlatform
from laku.audit import AUDIT_TIMEOUT_SECONDS, AuditClients, run_audit
from laku.core.http import new_http_client
from laku.testing.database import plain_url


class _Token:
    def __init__(self, token: str):
        self._token = token

    async def token(self) -> str:
        return self._token


async def run(platform: BenchPlatform, log_dir: Path, count: int) -> None:
    session = open_session(platform, count)
    await insert_paid_participants(platform.database_url, session, count)
    # Set up for a close there; here it stays open, so nothing closes it under the audit.
    conn = await asyncpg.connect(plain_url(platform.database_url))
    try:
        await conn.execute(
            "UPDATE group_buying.group_buying_sessions SET end_time = $2 WHERE id = $1",
            session.id,
            datetime.now(UTC) + timedelta(days=1),
        )
    finally:
        await conn.close()
    token = platform.admin_token()
    window_start = datetime.now(UTC)
    started = time.perf_counter()
    async with new_http_client(AUDIT_TIMEOUT_SECONDS) as http:
        report = await run_audit(
            AuditClients.connect(platform.settings, http, _Token(token)), timedelta(0)
        )
    seconds = time.perf_counter() - started
    await asyncio.sleep(1)  # the last requests' log lines
    served = [
        e for e in request_log(log_dir) if datetime.fromisoformat(e["timestamp"]) >= window_start
    ]
    calls = Counter(f"{e['service']} {e['method']} {e['path']}" for e in served)

    print(f"participants            {count}")
    print(f"audit                   {seconds:.1f} s, {'ok' if report.ok else 'VIOLATIONS'}")
    print(f"HTTP requests           {len(served)} ({len(served) / count:.4f} per participant)")
    for call, n in sorted(calls.items()):
        print(f"  {n:5d}  {call}")
    for item in report.invariants:
        print(f"  {'ok' if item.ok else 'VIOLATION':9s} {item.name}: {item.figures}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--participants", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="laku-audit-bench-") as logs:
        log_dir = Path(logs)
        with logged_platform(log_dir) as platform:
            asyncio.run(run(platform, log_dir, args.participants))


if __name__ == "__main__":
    main()
