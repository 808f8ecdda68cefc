"""The `laku` command as `make up` runs it: embedded PostgreSQL, every service, clean stop."""

import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path

import asyncpg
import httpx
import psutil
import pytest
from sqlalchemy.engine import make_url

from laku import demo
from laku.core.secrets import with_development_secrets
from laku.core.services import PROCESSES
from laku.core.settings import Settings
from laku.testing.database import plain_url, run
from laku.testing.platform import Platform, free_port_offset

LAKU = str(Path(sys.executable).with_name("laku"))


def _wait_all_ready(offset: int, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    pending = dict.fromkeys(PROCESSES)
    with httpx.Client(timeout=1.0) as client:
        while pending and time.monotonic() < deadline:
            if process.poll() is not None:
                output = process.stdout.read() if process.stdout else ""
                raise AssertionError(f"laku up exited early:\n{output}")
            for name in list(pending):
                try:
                    url = f"http://127.0.0.1:{PROCESSES[name].port + offset}/ready"
                    if client.get(url).status_code == 200:
                        del pending[name]
                except httpx.HTTPError:
                    pass
            time.sleep(0.2)
    assert not pending, f"not ready: {sorted(pending)}"


def _processes_mentioning(*words: object) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if all(str(word) in cmdline for word in words):
            found.append(process)
    return found


def test_up_runs_every_service_on_embedded_postgres_and_stops_cleanly(tmp_path: Path) -> None:
    offset = free_port_offset()
    env = {k: v for k, v in os.environ.items() if k != "LAKU_DATABASE_URL"}
    # A data folder that does not exist yet, as on a fresh clone.
    env |= {"LAKU_DATA_DIR": str(tmp_path / ".laku"), "LAKU_PORT_OFFSET": str(offset)}
    up = subprocess.Popen(
        [LAKU, "up"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        _wait_all_ready(offset, up)
        children = psutil.Process(up.pid).children(recursive=True)
        postgres = _processes_mentioning(tmp_path, "postgres")
        # By default every service shares one process, each on its own port.
        hosts = [p for p in children if " host " in " ".join(p.cmdline())]
        assert len(hosts) == 1, children
        assert postgres, "the embedded PostgreSQL is not running under the data folder"
        # The admin's password was generated into the data folder, for its owner only.
        password_file = tmp_path / ".laku" / "secrets" / "admin_password"
        assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
        login = httpx.post(
            f"http://127.0.0.1:{PROCESSES['auth'].port + offset}/api/auth/login",
            json={"email": "admin@laku.id", "password": password_file.read_text().strip()},
            timeout=30,  # a full-cost password hash, on a machine busy starting everything
        )
        assert login.status_code == 200, login.text
        _assert_services_run_as_their_roles(hosts[0])
        _assert_demo_loaded(offset, tmp_path / ".laku")

        # A process that dies is restarted by the supervisor, with every service it hosted.
        [host] = hosts
        host.kill()
        host.wait(5)
        _wait_all_ready(offset, up, timeout=30)
        children = psutil.Process(up.pid).children(recursive=True)
    finally:
        up.send_signal(signal.SIGINT)
        output, _ = up.communicate(timeout=30)
    assert up.returncode == 0, output
    assert "Laku is ready" in output
    assert f"admin password: in {password_file}" in output, output
    # The web front end's URL is the first one printed: it is where a person starts.
    web_url = f"http://127.0.0.1:{PROCESSES['web'].port + offset}"
    first_url = re.search(r"http://127\.0\.0\.1:\d+", output)
    assert first_url is not None and first_url.group(0) == web_url, output
    _, alive = psutil.wait_procs([*children, *postgres], timeout=10)
    assert not alive, f"left running: {[p.pid for p in alive]}"


def _assert_services_run_as_their_roles(host: psutil.Process) -> None:
    """The host process is given its services' own role URLs (with passwords derived from the
    data folder's role secret), never the owner's or the secret behind every password; the
    front end gets none."""
    environ = host.environ()
    assert "LAKU_DATABASE_ROLE_SECRET" not in environ
    assert not environ["LAKU_DATABASE_URL"]
    urls = json.loads(environ["LAKU_DATABASE_URLS"])
    assert "web" not in urls
    warehouse = make_url(urls["warehouse"])
    assert warehouse.username == "laku_warehouse" and warehouse.password
    assert make_url(urls["auth"]).username == "laku_auth"

    async def check() -> None:
        conn = await asyncpg.connect(plain_url(urls["warehouse"]))
        try:
            assert await conn.fetchval("SELECT count(*) FROM warehouse.stock_movements") >= 0
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.fetch("SELECT private_key_encrypted FROM auth.signing_keys")
        finally:
            await conn.close()

    run(check())


def _assert_demo_loaded(offset: int, data_dir: Path) -> None:
    """`laku up` loads the demo data once everything is ready: its buyer can join the demo group
    buy and reach the Xendit sandbox's checkout page, and loading again creates nothing twice."""

    def url(service: str, path: str) -> str:
        return f"http://127.0.0.1:{PROCESSES[service].port + offset}{path}"

    deadline = time.monotonic() + 60
    while True:
        login = httpx.post(
            url("auth", "/api/auth/login"),
            json={"email": demo.BUYER_EMAIL, "password": demo.BUYER_PASSWORD},
            # An Argon2 hash at its default cost, on a machine the test suite keeps busy.
            timeout=30,
        )
        if login.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert login.status_code == 200, login.text
    buyer = {"Authorization": f"Bearer {login.json()['accessToken']}"}
    [session] = httpx.get(url("group-buying", "/api/group-buying")).json()["items"]
    assert (session["productName"], session["targetMoq"], session["status"]) == (
        "Premium T-Shirt",
        demo.TARGET_MOQ,
        "forming",
    )
    [address] = httpx.get(url("address", "/api/addresses"), headers=buyer).json()
    assert address["isDefault"]

    reloaded = demo.load_demo(
        with_development_secrets(Settings(port_offset=offset, data_dir=data_dir))
    )
    assert reloaded.session_code == session["sessionCode"]
    assert len(httpx.get(url("group-buying", "/api/group-buying")).json()["items"]) == 1
    products = httpx.get(url("product", "/api/products")).json()
    assert [p["sku"] for p in products["items"]] == ["TSHIRT-001"]

    medium = next(v for v in session["variants"] if v["variantName"] == "Medium")
    joined = httpx.post(
        url("group-buying", f"/api/group-buying/{session['id']}/join"),
        json={"variantId": medium["variantId"], "quantity": 5},
        headers=buyer,
        timeout=10,
    )
    assert joined.status_code == 201, joined.text
    assert joined.json()["participant"]["unitPrice"] == 95000
    checkout = httpx.get(joined.json()["paymentUrl"], timeout=10)
    assert checkout.status_code == 200
    assert "text/html" in checkout.headers["content-type"]


def test_admin_create_makes_an_account_that_can_log_in(platform: Platform) -> None:
    email = f"second-admin-{uuid.uuid4().hex[:8]}@laku.id"
    env = {**os.environ, "LAKU_DATABASE_URL": platform.database_url}
    result = subprocess.run(
        [LAKU, "admin", "create", "--email", email, "--name", "Dewi", "--password", "s3cret-pass"],
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    token = platform.login(email, "s3cret-pass")
    me = platform.client("auth").get("/api/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert me.json()["role"] == "admin"


def test_migrate_is_repeatable(platform: Platform) -> None:
    env = {**os.environ, "LAKU_DATABASE_URL": platform.database_url}
    for _ in range(2):
        result = subprocess.run([LAKU, "migrate"], env=env, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
