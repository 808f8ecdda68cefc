"""The web front end's home and group-buy pages under 64 concurrent users, the group-buy page's
first-visit weight, and its layout shift while it loads (in Chromium).

    .venv/bin/python bench/web_pages.py [--users 64] [--seconds 10] [--think 1.0]

Two loads per page: 64 users who each read a page and look at it for `--think` seconds
(about one page a second each), and 64 connections asking back to back with no pause (the
saturation figure: latency there is 64 / throughput).
"""

import argparse
import asyncio
import os
import random
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (
    ADMIN,
    CHEAP_PASSWORDS,
    NO_RATE_LIMITS,
    AdminSession,
    BenchPlatform,
    LoadResult,
)
from laku.core.supervisor import Supervisor
from laku.testing.browser import CHROMIUM, CHROMIUM_ARGS, PHONE
from laku.testing.catalog import TIERS, create_seed_catalog
from laku.testing.database import LOCAL_SERVER, service_role_env, throwaway_database
from laku.testing.platform import bearer, free_port_offset, settings_from_env

ASSET = re.compile(r'(?:href|src)="(/static/[^"]+)"')
# Buffered in the page before it loads: every layout shift Chromium reports, summed (CLS).
CLS_OBSERVER = """
window.__cls = 0;
new PerformanceObserver(list => {
  for (const entry of list.getEntries()) if (!entry.hadRecentInput) window.__cls += entry.value;
}).observe({type: "layout-shift", buffered: true});
"""


async def get_load(
    label: str, url: str, path: str, *, users: int, seconds: float, think: float
) -> LoadResult:
    """`users` keep-alive connections GETting `path`; each pauses `think` s (jittered) between
    pages. Raw HTTP/1.1 so the client costs little CPU next to the server."""
    host_port = url.removeprefix("http://")
    host, port = host_port.split(":")
    result = LoadResult(label, seconds)
    deadline = time.perf_counter() + seconds
    request = f"GET {path} HTTP/1.1\r\nHost: {host_port}\r\nAccept: text/html\r\n\r\n".encode()

    async def user() -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        if think:
            await asyncio.sleep(random.uniform(0, think))  # users do not arrive in step
        try:
            while time.perf_counter() < deadline:
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
                if think:
                    await asyncio.sleep(random.uniform(0.5 * think, 1.5 * think))
        finally:
            writer.close()

    await asyncio.gather(*(user() for _ in range(users)))
    return result


def first_visit_bytes(web: str, path: str) -> dict[str, int]:
    """What a first visit downloads, images aside: the HTML and every asset it links."""
    with httpx.Client(base_url=web) as client:
        page = client.get(path)
        sizes = {path: len(page.content)}
        for asset in sorted(set(ASSET.findall(page.text))):
            sizes[asset] = len(client.get(asset).content)
    return sizes


def layout_shift(web: str, path: str) -> float:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=PHONE)
            page.add_init_script(CLS_OBSERVER)
            page.goto(f"{web}{path}", wait_until="load")
            page.wait_for_timeout(1500)
            return float(page.evaluate("window.__cls"))
        finally:
            browser.close()


@contextmanager
def platform_logging_to_files(log_dir: Path) -> Iterator[BenchPlatform]:
    """As `bench_platform`, with each process logging JSON to a file, as in production, rather
    than pretty lines on this terminal (which would cost more than the pages)."""
    offset = free_port_offset()
    with throwaway_database(os.environ.get("LAKU_DATABASE_URL", LOCAL_SERVER)) as url:
        env = {
            "LAKU_DATABASE_URL": url,
            "LAKU_PORT_OFFSET": str(offset),
            "LAKU_LOG_JSON": "true",
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--think", type=float, default=1.0)
    args = parser.parse_args()

    with (
        tempfile.TemporaryDirectory(prefix="laku-bench-logs-") as logs,
        platform_logging_to_files(Path(logs)) as platform,
    ):
        admin = AdminSession(platform)
        catalog = create_seed_catalog(admin)  # type: ignore[arg-type]
        headers = bearer(admin.admin_token)
        admin.client("product").post(
            f"/api/products/{catalog.product_id}/publish", headers=headers
        ).raise_for_status()
        end = datetime.now(UTC) + timedelta(hours=2)
        session = admin.client("group-buying").post(
            "/api/group-buying",
            json={
                "productId": catalog.product_id,
                "factoryId": catalog.factory_id,
                "targetMoq": 12,
                **TIERS,
                "endTime": end.isoformat(),
                "estimatedCompletionDate": (end + timedelta(days=14)).isoformat(),
            },
            headers=headers,
        )
        session.raise_for_status()
        web = platform.url("web")
        pages = {"home": "/", "group-buy": f"/g/{session.json()['sessionCode']}"}
        for path in pages.values():  # warm: templates compiled, caches filled
            httpx.get(f"{web}{path}").raise_for_status()

        print(f"web pages, {args.users} users, {args.seconds:.0f} s each")
        for name, path in pages.items():
            for think in (args.think, 0.0):
                label = f"{name} ({'think ' + str(think) + ' s' if think else 'back to back'})"
                result = asyncio.run(
                    get_load(label, web, path, users=args.users, seconds=args.seconds, think=think)
                )
                print(result.line())

        sizes = first_visit_bytes(web, pages["group-buy"])
        print("group-buy page first visit: " + ", ".join(f"{k} {v:,} B" for k, v in sizes.items()))
        print(f"  total {sum(sizes.values()):,} B (no compression, no fonts, images aside)")
        shift = layout_shift(web, pages["group-buy"])
        print(f"layout shift (CLS) while the group-buy page loads: {shift:.4f}")
        print(f"load average of this machine (1, 5, 15 min): {os.getloadavg()}")


if __name__ == "__main__":
    main()
