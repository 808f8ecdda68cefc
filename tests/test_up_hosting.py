"""Several services in one process (`laku host`, what `laku up` runs): each on its own port,
calling the others through their clients in process, all stopped together and cleanly; and
several such processes sharing the ports (`laku up --workers`)."""

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import psutil
import pytest

from laku.core.services import PROCESSES, SANDBOXES
from laku.core.supervisor import Supervisor
from laku.testing.platform import SECRETS_ENV, free_port_offset, settings_from_env
from tests.support import eventually

LAKU = str(Path(sys.executable).with_name("laku"))
HOSTED = ["auth", "address", "xendit-sandbox"]


def _url(name: str, offset: int, path: str) -> str:
    return f"http://127.0.0.1:{PROCESSES[name].port + offset}{path}"


def _env(database_url: str, offset: int) -> dict[str, str]:
    return {
        **SECRETS_ENV,
        "LAKU_DATABASE_URL": database_url,
        "LAKU_PORT_OFFSET": str(offset),
        "LAKU_HOST": "127.0.0.1",
        "LAKU_PASSWORD_HASH_TIME_COST": "1",
        "LAKU_PASSWORD_HASH_MEMORY_KIB": "1024",
    }


def _start_host(database_url: str, offset: int) -> subprocess.Popen:
    return subprocess.Popen(
        [LAKU, "host", *HOSTED, "--host", "127.0.0.1", "--graceful-seconds", "5"],
        env={**os.environ, **_env(database_url, offset)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_ready(host: subprocess.Popen, offset: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    pending = set(HOSTED)
    with httpx.Client(timeout=1.0) as client:
        while pending and time.monotonic() < deadline:
            assert host.poll() is None, host.communicate()[0]
            for name in list(pending):
                try:
                    if client.get(_url(name, offset, "/ready")).status_code == 200:
                        pending.discard(name)
                except httpx.HTTPError:
                    pass
            time.sleep(0.2)
    assert not pending, f"not ready: {sorted(pending)}"


def _listening_ports(pid: int) -> set[int]:
    return {
        conn.laddr.port
        for conn in psutil.Process(pid).net_connections(kind="tcp")
        if conn.status == psutil.CONN_LISTEN
    }


def _connects_to(pid: int, port: int) -> bool:
    """Whether the process has a connection to `port`, as a client of it."""
    return any(
        conn.raddr and conn.raddr.port == port
        for conn in psutil.Process(pid).net_connections(kind="tcp")
    )


def test_one_process_serves_several_services_that_call_each_other_and_stops_them_all(
    database_url: str,
) -> None:
    offset = free_port_offset()
    host = _start_host(database_url, offset)
    try:
        _wait_ready(host, offset)
        ports = {PROCESSES[name].port + offset for name in HOSTED}
        assert ports <= _listening_ports(host.pid), "not every service listens in this process"
        assert not psutil.Process(host.pid).children(), "a service runs in a process of its own"

        # address-service checks a buyer's token against auth-service's keys, fetched through
        # its client from the same process: the clients' contract holds when they share it.
        email = f"hosted-{uuid.uuid4().hex[:10]}@laku.id"
        registered = httpx.post(
            _url("auth", offset, "/api/auth/register"),
            json={"email": email, "password": "hosted-password", "name": "Hosted"},
        )
        assert registered.status_code == 201, registered.text
        login = httpx.post(
            _url("auth", offset, "/api/auth/login"),
            json={"email": email, "password": "hosted-password"},
        )
        token = login.json()["accessToken"]
        addresses = httpx.get(
            _url("address", offset, "/api/addresses"), headers={"Authorization": f"Bearer {token}"}
        )
        assert addresses.status_code == 200, addresses.text
        assert addresses.json() == []
        forged = httpx.get(
            _url("address", offset, "/api/addresses"), headers={"Authorization": "Bearer x.y.z"}
        )
        assert forged.status_code == 401
        # ... made in process: over HTTP, the host would keep a connection open to auth.
        assert not _connects_to(host.pid, PROCESSES["auth"].port + offset)
    finally:
        host.send_signal(signal.SIGTERM)
        output, _ = host.communicate(timeout=30)

    assert host.returncode == 0, output
    # Each app ran its own shutdown (uvicorn logs it once per server).
    assert output.count("Application shutdown complete") == len(HOSTED), output
    for port in ports:
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still open"


def test_a_service_that_cannot_start_stops_the_whole_host(database_url: str) -> None:
    offset = free_port_offset()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", PROCESSES["address"].port + offset))
        taken.listen()
        host = _start_host(database_url, offset)
        output, _ = host.communicate(timeout=60)
    # Exits, so that its supervisor starts it again, rather than running without a service.
    assert host.returncode != 0, output
    for name in ("auth", "xendit-sandbox"):
        with pytest.raises(httpx.ConnectError):
            httpx.get(_url(name, offset, "/health"))


def test_host_processes_share_every_service_port_and_one_runs_the_sandboxes(
    database_url: str,
) -> None:
    offset = free_port_offset()
    env = _env(database_url, offset)
    supervisor = Supervisor(settings_from_env(env), env=env, services=HOSTED, hosts=2)
    supervisor.start()
    try:
        supervisor.wait_ready(timeout_seconds=60)
        first, second = (psutil.Process(pid) for pid in supervisor.pids())
        ports = {name: PROCESSES[name].port + offset for name in HOSTED}
        # Ready means some process answers; the other may still be starting.
        assert eventually(lambda: set(ports.values()) <= _listening_ports(first.pid))
        # The sandboxes keep what they are asked in memory: one copy, in the first host.
        assert eventually(
            lambda: (
                _listening_ports(second.pid) & set(ports.values())
                == {port for name, port in ports.items() if name not in SANDBOXES}
            )
        )
        # The kernel deals new connections to both processes.
        clients = [httpx.Client(timeout=5.0) for _ in range(40)]
        try:
            for client in clients:
                assert client.get(_url("auth", offset, "/health")).status_code == 200
            served_by = {
                process.pid: [
                    conn
                    for conn in process.net_connections(kind="tcp")
                    if conn.laddr.port == ports["auth"] and conn.status == psutil.CONN_ESTABLISHED
                ]
                for process in (first, second)
            }
        finally:
            for client in clients:
                client.close()
        assert all(served_by.values()), {pid: len(conns) for pid, conns in served_by.items()}

        # A second platform on the same ports is refused, not silently mixed with this one.
        with pytest.raises(RuntimeError, match="in use"):
            Supervisor(settings_from_env(env), env=env, services=HOSTED, hosts=2).start()
    finally:
        supervisor.stop()
    for port in ports.values():
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still open"
