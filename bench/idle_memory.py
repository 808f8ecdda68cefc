"""Start the platform as `make up` does, wait until idle, print its resident memory.

Counts every process `laku up` started (the supervisor, one uvicorn per service) and, when no
LAKU_DATABASE_URL is set, the embedded PostgreSQL's processes. Prints RSS (what each process
has resident, shared pages counted in each) and PSS (shared pages split between processes).
"""

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

from laku.core.services import PROCESSES
from laku.core.settings import Settings

MIB = 1024 * 1024


def _wait_ready(settings: Settings, timeout: float) -> float:
    started = time.monotonic()
    with httpx.Client(timeout=1.0) as client:
        while time.monotonic() - started < timeout:
            try:
                if all(
                    client.get(f"{spec.url(settings)}/ready").status_code == 200
                    for spec in PROCESSES.values()
                ):
                    return time.monotonic() - started
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
    raise TimeoutError("platform not ready")


def _platform_processes(root: psutil.Process, data_dir: Path) -> list[psutil.Process]:
    processes = [root, *root.children(recursive=True)]
    marker = str(data_dir.resolve())
    for process in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if "postgres" in cmdline and marker in cmdline:
            processes.extend([process, *process.children(recursive=True)])
    return list({p.pid: p for p in processes}.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="laku-bench-"))
    env = {**os.environ, "LAKU_DATA_DIR": str(data_dir)}
    settings = Settings(data_dir=data_dir)
    laku = Path(sys.executable).with_name("laku")
    started = time.monotonic()
    up = subprocess.Popen([str(laku), "up"], env=env, stdout=subprocess.DEVNULL)
    try:
        ready_after = _wait_ready(settings, timeout=180)
        print(f"ready after {time.monotonic() - started:.1f} s (services {ready_after:.1f} s)")
        time.sleep(args.idle_seconds)
        rss = pss = 0
        rows = []
        for process in _platform_processes(psutil.Process(up.pid), data_dir):
            info = process.memory_full_info()
            rss, pss = rss + info.rss, pss + info.pss
            rows.append((info.rss, process.pid, " ".join(process.cmdline()[:6])[:90]))
        for resident, pid, cmd in sorted(rows, reverse=True):
            print(f"{resident / MIB:8.1f} MiB  {pid:>7}  {cmd}")
        print(f"processes: {len(rows)}")
        print(f"total RSS: {rss / MIB:.0f} MiB   total PSS: {pss / MIB:.0f} MiB")
    finally:
        up.send_signal(signal.SIGINT)
        up.wait(30)


if __name__ == "__main__":
    main()
