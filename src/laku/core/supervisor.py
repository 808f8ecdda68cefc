"""Runs services as their own uvicorn processes: start, wait for `/ready`, restart, stop."""

import ctypes
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import structlog

from laku.core.database_roles import ROLE_SECRET_VARIABLE
from laku.core.services import PROCESSES, ProcessSpec
from laku.core.settings import Settings

log = structlog.get_logger()
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child: get SIGTERM if the supervisor dies without stopping it (Linux only)."""
    if sys.platform == "linux":
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class ServiceProcess:
    spec: ProcessSpec
    process: subprocess.Popen | None = None
    restarts: int = 0
    next_start_at: float = 0.0


@dataclass
class Supervisor:
    """Owns one process per service. `env` is what they all get (port offset...), `service_env`
    what only one gets on top (its own database URL)."""

    settings: Settings
    env: dict[str, str]
    service_env: dict[str, dict[str, str]] = field(default_factory=dict)
    services: list[str] = field(default_factory=lambda: list(PROCESSES))
    log_dir: Path | None = None
    processes: dict[str, ServiceProcess] = field(default_factory=dict)

    def start(self) -> None:
        for name in self.services:
            self.start_one(name)

    def start_one(self, name: str) -> None:
        """Start one process (again, after `stop(name)`)."""
        self.processes[name] = ServiceProcess(PROCESSES[name])
        self._spawn(self.processes[name])

    def _spawn(self, entry: ServiceProcess) -> None:
        spec = entry.spec
        port = spec.port + self.settings.port_offset
        # The command a container runs, so the platform here starts services the same way.
        command = [
            sys.executable, "-m", "laku", "serve", spec.name,
            "--host", self.settings.host, "--port", str(port), "--graceful-seconds", "5",
        ]  # fmt: skip
        output = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            output = open(self.log_dir / f"{spec.name}.log", "ab")  # noqa: SIM115 - kept by the child
        entry.process = subprocess.Popen(
            command,
            env=self._env(spec.name),
            stdout=output,
            stderr=subprocess.STDOUT if output else None,
            start_new_session=True,  # Ctrl-C reaches the supervisor, which stops children in order
            preexec_fn=_die_with_parent,
        )
        if output:
            output.close()
        log.info("service_started", service=spec.name, port=port, pid=entry.process.pid)

    def _env(self, name: str) -> dict[str, str]:
        # The secret every role's password derives from stays with the supervisor.
        inherited = {k: v for k, v in os.environ.items() if k != ROLE_SECRET_VARIABLE}
        return {**inherited, **self.env, **self.service_env.get(name, {})}

    def wait_ready(self, timeout_seconds: float = 120.0) -> float:
        """Block until every service answers `/ready`; return the seconds it took."""
        started = time.monotonic()
        pending = set(self.processes)
        with httpx.Client(timeout=1.0) as client:
            while pending:
                for name in sorted(pending):
                    entry = self.processes[name]
                    if entry.process and entry.process.poll() is not None:
                        raise RuntimeError(f"{name}-service exited with {entry.process.returncode}")
                    try:
                        if client.get(f"{entry.spec.url(self.settings)}/ready").status_code == 200:
                            pending.discard(name)
                    except httpx.HTTPError:
                        pass
                if time.monotonic() - started > timeout_seconds:
                    raise TimeoutError(f"not ready after {timeout_seconds}s: {sorted(pending)}")
                if pending:
                    time.sleep(0.1)
        return time.monotonic() - started

    def restart_exited(self) -> None:
        """Restart any service that died, backing off 1, 2, 4... up to 30 seconds."""
        now = time.monotonic()
        for entry in self.processes.values():
            if entry.process is None or entry.process.poll() is None:
                continue
            if entry.next_start_at == 0.0:
                delay = min(2**entry.restarts, 30)
                entry.next_start_at = now + delay
                log.warning(
                    "service_exited",
                    service=entry.spec.name,
                    code=entry.process.returncode,
                    restart_in_s=delay,
                )
            elif now >= entry.next_start_at:
                entry.restarts += 1
                entry.next_start_at = 0.0
                self._spawn(entry)

    def stop(self, name: str | None = None, timeout_seconds: float = 10.0) -> None:
        """Stop one service, or all: SIGTERM, then SIGKILL whatever is still running."""
        entries = [self.processes[name]] if name else list(self.processes.values())
        running = [e.process for e in entries if e.process and e.process.poll() is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_seconds
        for process in running:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def pids(self) -> list[int]:
        return [
            e.process.pid for e in self.processes.values() if e.process and e.process.poll() is None
        ]
