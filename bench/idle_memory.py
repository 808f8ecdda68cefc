"""Start the platform as `make up` does, print how long it took to be ready and, once idle,
its resident memory.

Starts `laku up` twice on one data folder: first from an empty folder (initdb of the embedded
PostgreSQL and every migration included), then again on the folder the first run left (what
every later `make up` does). Ready: every service and sandbox answers `/ready`.

Counts every process `laku up` started (the supervisor, the processes hosting the services)
and, when no LAKU_DATABASE_URL is set, the embedded PostgreSQL's processes. Prints RSS (what
each process has resident, shared pages counted in each) and PSS (shared pages split between
processes), measured in the first run after `--idle-seconds`.
"""

import argparse
import contextlib
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


def _wait_ready(settings: Settings, up: subprocess.Popen, timeout: float) -> None:
    started = time.monotonic()
    pending = {spec.url(settings) for spec in PROCESSES.values()}
    with httpx.Client(timeout=1.0) as client:
        while pending:
            if up.poll() is not None:
                raise RuntimeError(f"laku up exited with {up.returncode}")
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"not ready: {sorted(pending)}")
            for url in list(pending):
                try:
                    if client.get(f"{url}/ready").status_code == 200:
                        pending.discard(url)
                except httpx.HTTPError:
                    pass
            if pending:
                time.sleep(0.1)


def _platform_processes(root: psutil.Process, data_dir: Path) -> list[psutil.Process]:
    processes = [root, *root.children(recursive=True)]
    marker = str(data_dir.resolve())
    for process in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if "postgres" in cmdline and marker in cmdline:
            processes.extend([process, *process.children(recursive=True)])
    return list({p.pid: p for p in processes}.values())


def _print_memory(up: subprocess.Popen, data_dir: Path) -> None:
    rss = pss = 0
    rows = []
    for process in _platform_processes(psutil.Process(up.pid), data_dir):
        info = process.memory_full_info()
        rss, pss = rss + info.rss, pss + info.pss
        rows.append((info.rss, info.pss, process.pid, " ".join(process.cmdline()[:8])[:90]))
    print("     RSS        PSS      pid  command")
    for resident, proportional, pid, cmd in sorted(rows, reverse=True):
        print(f"{resident / MIB:8.1f}  {proportional / MIB:8.1f} MiB {pid:>7}  {cmd}")
    print(f"processes: {len(rows)}")
    print(f"total RSS: {rss / MIB:.0f} MiB   total PSS: {pss / MIB:.0f} MiB")


def _cpu_seconds(up: subprocess.Popen, data_dir: Path) -> float:
    """CPU time (user and system) the platform's processes have used so far, those that have
    exited and were waited for included: what start-up costs on a machine that is not busy."""
    total = 0.0
    for process in _platform_processes(psutil.Process(up.pid), data_dir):
        with contextlib.suppress(psutil.NoSuchProcess):
            times = process.cpu_times()
            total += times.user + times.system + times.children_user + times.children_system
    return total


def _run_up(
    command: list[str],
    env: dict[str, str],
    settings: Settings,
    data_dir: Path,
    idle_seconds: float | None,
) -> tuple[float, float]:
    """Start `laku up`, wait until ready; print the memory after `idle_seconds` (None: don't);
    stop it. Returns the seconds from start to ready and the CPU seconds spent by then."""
    started = time.monotonic()
    up = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
    assert up.stdout is not None
    output = up.stdout
    try:
        _wait_ready(settings, up, timeout=180)
        ready_after = time.monotonic() - started
        cpu = _cpu_seconds(up, data_dir)
        if idle_seconds is not None:
            # Idle: once `laku up` has loaded the demo data (it says so) and the time after.
            for line in output:
                if line.startswith(("demo group buy", "demo data not loaded")):
                    break
            time.sleep(idle_seconds)
            _print_memory(up, data_dir)
        return ready_after, cpu
    finally:
        up.send_signal(signal.SIGINT)
        up.communicate(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument("up_args", nargs="*", help="Passed on to `laku up`, after --")
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="laku-bench-")) / ".laku"
    env = {k: v for k, v in os.environ.items() if k != "LAKU_DATABASE_URL"}
    env["LAKU_DATA_DIR"] = str(data_dir)
    settings = Settings(data_dir=data_dir, database_url=None)
    command = [str(Path(sys.executable).with_name("laku")), "up", *args.up_args]
    from_empty = _run_up(command, env, settings, data_dir, args.idle_seconds)
    from_existing = _run_up(command, env, settings, data_dir, None)
    # The wall time depends on what else the machine runs; the CPU time much less.
    for folder, (seconds, cpu) in (("an empty", from_empty), ("an existing", from_existing)):
        print(f"ready from {folder} data folder: {seconds:.1f} s ({cpu:.1f} CPU seconds)")


if __name__ == "__main__":
    main()
