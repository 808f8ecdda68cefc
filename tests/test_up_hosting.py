"""Several services in one process (`laku host`, what `laku up` runs): each on its own port,
still calling the others over HTTP, all stopped together and cleanly."""

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

from laku.core.services import PROCESSES
from laku.core.supervisor import split_services
from laku.testing.platform import SECRETS_ENV, free_port_offset

LAKU = str(Path(sys.executable).with_name("laku"))
HOSTED = ["auth", "address", "xendit-sandbox"]


def _url(name: str, offset: int, path: str) -> str:
    return f"http://127.0.0.1:{PROCESSES[name].port + offset}{path}"


def _start_host(database_url: str, offset: int) -> subprocess.Popen:
    env = {
        **os.environ,
        **SECRETS_ENV,
        "LAKU_DATABASE_URL": database_url,
        "LAKU_PORT_OFFSET": str(offset),
        "LAKU_PASSWORD_HASH_TIME_COST": "1",
        "LAKU_PASSWORD_HASH_MEMORY_KIB": "1024",
    }
    return subprocess.Popen(
        [LAKU, "host", *HOSTED, "--host", "127.0.0.1", "--graceful-seconds", "5"],
        env=env,
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

        # address-service checks a buyer's token against auth-service's keys, fetched over
        # HTTP from the same process: the clients' contract holds when they share it.
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


def test_services_are_split_over_the_hosts_with_the_busiest_apart() -> None:
    services = list(PROCESSES)
    for hosts in (1, 2, 3, len(services), len(services) + 5):
        groups = split_services(services, hosts)
        assert len(groups) == min(hosts, len(services))
        assert sorted(name for group in groups for name in group) == sorted(services)
        assert all(groups)
    first, second = split_services(services, 2)
    # A join's hops: group-buying calls warehouse and payment, payment calls the Xendit sandbox.
    assert "group-buying" in first and "payment" in second
    assert "warehouse" in first and "xendit-sandbox" in second
