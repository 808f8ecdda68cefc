"""Runs services as uvicorn processes: start, wait for `/ready`, restart, stop. Either one
process per service (`laku serve`, as a container runs it: the tests' platform), or a few
host processes each serving every service (`laku host`, what `laku up` runs by default)."""

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import structlog

from laku.core.database_roles import ROLE_SECRET_VARIABLE
from laku.core.services import PROCESSES, SANDBOXES, ProcessSpec
from laku.core.settings import Settings

log = structlog.get_logger()
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child: get SIGTERM if the supervisor dies without stopping it (Linux only)."""
    if sys.platform == "linux":
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class ServiceProcess:
    """One process: a service's own, or a host of several (`specs`)."""

    name: str
    specs: list[ProcessSpec]
    process: subprocess.Popen | None = None
    restarts: int = 0
    next_start_at: float = 0.0


@dataclass
class Supervisor:
    """Owns the platform's processes. `env` is what they all get (port offset...),
    `service_env` what one process gets on top, by its name (its own database URLs). `hosts`:
    None, one process per service, named as the service; else that many processes, named
    `host-1`, `host-2`..., each serving every service on the same ports (SO_REUSEPORT: the
    kernel deals the connections among them), so the busiest service gets every core, and a
    call between services stays inside the process that makes it (laku.core.in_process).
    The sandboxes keep what they were asked in memory, so only `host-1` runs them."""

    settings: Settings
    env: dict[str, str]
    service_env: dict[str, dict[str, str]] = field(default_factory=dict)
    services: list[str] = field(default_factory=lambda: list(PROCESSES))
    log_dir: Path | None = None
    hosts: int | None = None
    processes: dict[str, ServiceProcess] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.hosts is None:
            self._groups = {name: [name] for name in self.services}
        else:
            others = [name for name in self.services if name not in SANDBOXES]
            self._groups = {"host-1": self.services}
            self._groups |= {f"host-{n}": others for n in range(2, self.hosts + 1)}

    def start(self) -> None:
        if self.hosts is not None:
            for name in self.services:
                self._require_free(PROCESSES[name])
        for name in self._groups:
            self.start_one(name)

    def _require_free(self, spec: ProcessSpec) -> None:
        """Host processes share their ports with any other process that asks to (SO_REUSEPORT):
        a port already in use would be shared with whatever holds it, not refused."""
        host, port = self.settings.host, spec.port + self.settings.port_offset
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError as exc:
                raise RuntimeError(f"{spec.name}: {host}:{port} is in use") from exc

    def start_one(self, name: str) -> None:
        """Start one process (again, after `stop(name)`)."""
        self.processes[name] = ServiceProcess(name, [PROCESSES[s] for s in self._groups[name]])
        self._spawn(self.processes[name])

    def _spawn(self, entry: ServiceProcess) -> None:
        options = ["--host", self.settings.host, "--graceful-seconds", "5"]
        if self.hosts is None:
            # The command a container runs, so the platform here starts services the same way.
            [spec] = entry.specs
            port = str(spec.port + self.settings.port_offset)
            command = [sys.executable, "-m", "laku", "serve", spec.name, "--port", port, *options]
        else:
            command = [sys.executable, "-m", "laku", "host", *(s.name for s in entry.specs)]
            command += [*options, "--reuse-port"]
        output = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            output = open(self.log_dir / f"{entry.name}.log", "ab")  # noqa: SIM115 - kept by the child
        entry.process = subprocess.Popen(
            command,
            env=self._env(entry.name),
            stdout=output,
            stderr=subprocess.STDOUT if output else None,
            start_new_session=True,  # Ctrl-C reaches the supervisor, which stops children in order
            preexec_fn=_die_with_parent,
        )
        if output:
            output.close()
        log.info(
            "service_started",
            process=entry.name,
            services=[s.name for s in entry.specs],
            pid=entry.process.pid,
        )

    def _env(self, name: str) -> dict[str, str]:
        # The secret every role's password derives from stays with the supervisor.
        inherited = {k: v for k, v in os.environ.items() if k != ROLE_SECRET_VARIABLE}
        return {**inherited, **self.env, **self.service_env.get(name, {})}

    def wait_ready(self, timeout_seconds: float = 120.0) -> float:
        """Block until every service answers `/ready`; return the seconds it took."""
        started = time.monotonic()
        pending = {spec.name: entry for entry in self.processes.values() for spec in entry.specs}
        with httpx.Client(timeout=1.0) as client:
            while pending:
                for name, entry in sorted(pending.items()):
                    if entry.process and entry.process.poll() is not None:
                        raise RuntimeError(f"{entry.name} exited with {entry.process.returncode}")
                    url = f"{PROCESSES[name].url(self.settings)}/ready"
                    try:
                        if client.get(url).status_code == 200:
                            del pending[name]
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
                    process=entry.name,
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
