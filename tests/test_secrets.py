"""Secrets and modes (design 14): no secret in code, generated once in development, refused when
weak in production; idempotency that keeps no credential; request ids safe to log."""

import hashlib
import hmac
import json
import os
import re
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr, ValidationError

from laku.auth.schemas import LoginRequest
from laku.core.secrets import KNOWN_DEMO_VALUES, SECRET_SETTINGS, env_name, generate_secret
from laku.core.services import PROCESSES
from laku.core.settings import Settings
from laku.demo import DemoLoadError, load_demo
from laku.testing.platform import ADMIN_EMAIL, ADMIN_PASSWORD, Platform, free_port_offset
from tests.service_logs import logged
from tests.support import assert_problem, deploy_generator, eventually

LAKU = str(Path(sys.executable).with_name("laku"))


def _clean_env(**extra: str) -> dict[str, str]:
    """The environment of a fresh shell: no `LAKU_*` from the test session, no `.env`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAKU_")}
    return env | extra


def _strong_secrets() -> dict[str, str]:
    return {env_name(name): generate_secret(name) for name in SECRET_SETTINGS}


@contextmanager
def _serving(service: str, env: dict[str, str], cwd: Path) -> Iterator[subprocess.Popen]:
    process = subprocess.Popen(
        [LAKU, "serve", service, "--host", "127.0.0.1"],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield process
    finally:
        process.terminate()
        process.communicate(timeout=20)


def _wait_ready(url: str, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[0]
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} never became healthy")


def test_no_secret_setting_has_a_default_in_code() -> None:
    fields = Settings.model_fields
    assert {"service_secret", "admin_password", "idempotency_key_secret"} <= set(SECRET_SETTINGS)
    assert all(fields[name].default is None for name in SECRET_SETTINGS)


def test_development_generates_each_secret_once_owner_only_and_reuses_it(tmp_path: Path) -> None:
    """`laku serve` (as `laku up` does for all) writes every unset secret into the data folder,
    readable by its owner only; a second start reads the same values; the sandbox started with
    them accepts the generated key and refuses another."""
    data_dir = tmp_path / "data"
    offset = free_port_offset()
    env = _clean_env(LAKU_DATA_DIR=str(data_dir), LAKU_PORT_OFFSET=str(offset))
    url = f"http://127.0.0.1:{PROCESSES['xendit-sandbox'].port + offset}"
    folder = data_dir / "secrets"

    with _serving("xendit-sandbox", env, tmp_path) as first:
        _wait_ready(url, first)
        generated = {name: (folder / name).read_text().strip() for name in SECRET_SETTINGS}
        key = generated["xendit_secret_key"]
        assert httpx.get(f"{url}/v2/invoices/none", auth=(key, "")).status_code == 404
        assert httpx.get(f"{url}/v2/invoices/none", auth=("xnd_other", "")).status_code == 401

    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for name, value in generated.items():
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600, name
        assert len(value.encode()) >= 32 and value not in KNOWN_DEMO_VALUES, name
    assert len(set(generated.values())) == len(generated)
    # The VAPID key is a P-256 private key (py-vapid loads it).
    from py_vapid import Vapid02

    Vapid02.from_string(generated["webpush_vapid_private_key"])

    with _serving("xendit-sandbox", env, tmp_path) as second:
        _wait_ready(url, second)
        again = {name: (folder / name).read_text().strip() for name in SECRET_SETTINGS}
        assert again == generated
        key = generated["xendit_secret_key"]
        assert httpx.get(f"{url}/v2/invoices/none", auth=(key, "")).status_code == 404


def _refused(command: list[str], env: dict[str, str], cwd: Path) -> str:
    result = subprocess.run(
        [LAKU, *command], env=env, cwd=cwd, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2, result.stdout + result.stderr
    return result.stderr


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "is not set"),
        ("short-but-not-demo", "is shorter than 32 bytes"),
        ("laku-dev-service-secret", "is a published demo value"),
    ],
)
def test_production_refuses_to_start_naming_the_weak_secret(
    tmp_path: Path, value: str | None, reason: str
) -> None:
    env = _clean_env(LAKU_ENV="production", LAKU_DATA_DIR=str(tmp_path / "data"))
    env |= _strong_secrets()
    del env["LAKU_SERVICE_SECRET"]
    if value is not None:
        env["LAKU_SERVICE_SECRET"] = value
    for command in (["serve", "auth"], ["up"]):
        message = _refused(command, env, tmp_path)
        assert f"LAKU_SERVICE_SECRET {reason}" in message, message
        assert "production" in message
    # Nothing generated, nothing started: no data folder at all.
    assert not (tmp_path / "data").exists()


def test_production_refuses_the_formerly_shipped_vapid_key(tmp_path: Path) -> None:
    """Long enough, but published: refused for what it is."""
    env = _clean_env(LAKU_ENV="production") | _strong_secrets()
    env["LAKU_WEBPUSH_VAPID_PRIVATE_KEY"] = "QhJ1cOLW8bjtoq3R8lb7bgu0UQvXPd03w1RBCehIGec"
    message = _refused(["serve", "notification"], env, tmp_path)
    assert "LAKU_WEBPUSH_VAPID_PRIVATE_KEY is a published demo value" in message, message


def test_production_never_loads_demo_data(tmp_path: Path) -> None:
    """Refused before any request: nothing listens on these ports, and a try would be a
    connection error rather than the refusal."""
    settings = Settings(
        env="production",
        port_offset=free_port_offset(),
        data_dir=tmp_path,
        **{name: SecretStr(value) for name, value in _settings_secrets().items()},
    )
    with pytest.raises(DemoLoadError, match="development only"):
        load_demo(settings)


def _settings_secrets() -> dict[str, str]:
    return {name: generate_secret(name) for name in SECRET_SETTINGS}


def test_an_admin_email_login_refuses_keeps_every_process_from_starting(tmp_path: Path) -> None:
    """An address under a reserved domain passes a loose check but never logs in: refused at
    start, in development too, naming the setting."""
    with pytest.raises(ValidationError):
        LoginRequest(email="admin@laku.test", password="x")
    env = _clean_env(LAKU_ADMIN_EMAIL="admin@laku.test", LAKU_DATA_DIR=str(tmp_path / "d"))
    message = _refused(["serve", "auth"], env, tmp_path)
    assert "LAKU_ADMIN_EMAIL='admin@laku.test' is not an address login accepts" in message
    message = _refused(["up"], env | {"LAKU_ENV": "production"} | _strong_secrets(), tmp_path)
    assert "LAKU_ADMIN_EMAIL" in message


def _register_body() -> bytes:
    email = f"fp-{uuid.uuid4().hex[:8]}@laku.id"
    return json.dumps({"email": email, "password": "a-password-1", "name": "F"}).encode()


def test_idempotency_fingerprint_is_keyed_not_a_plain_hash_of_the_body(
    platform: Platform,
) -> None:
    body, key = _register_body(), uuid.uuid4().hex
    created = platform.client("auth").post(
        "/api/auth/register",
        content=body,
        headers={"Idempotency-Key": key, "content-type": "application/json"},
    )
    assert created.status_code == 201, created.text
    [row] = platform.sql("SELECT fingerprint FROM auth.idempotency_keys WHERE key = $1", key)
    request = b"\n".join([b"POST", b"/api/auth/register", b"", body])
    assert row["fingerprint"] != hashlib.sha256(request).hexdigest()
    assert row["fingerprint"] != hashlib.sha256(body).hexdigest()
    secret = platform.settings.idempotency_key_secret
    assert secret is not None
    keyed = hmac.new(secret.get_secret_value().encode(), request, hashlib.sha256).hexdigest()
    assert row["fingerprint"] == keyed


def test_a_key_is_free_again_once_past_its_24_hours(platform: Platform) -> None:
    """Before the purge has run: an expired key neither replays nor refuses another body."""
    key = uuid.uuid4().hex
    auth = platform.client("auth")
    headers = {"Idempotency-Key": key, "content-type": "application/json"}
    first = auth.post("/api/auth/register", content=_register_body(), headers=headers)
    assert first.status_code == 201, first.text
    platform.sql(
        "UPDATE auth.idempotency_keys SET created_at = now() - interval '24 hours 1 minute' "
        "WHERE key = $1",
        key,
    )
    other = auth.post("/api/auth/register", content=_register_body(), headers=headers)
    assert other.status_code == 201, other.text
    assert "idempotent-replayed" not in other.headers
    assert other.json()["id"] != first.json()["id"]
    # The key now holds the second request, for another 24 hours.
    replay = auth.post("/api/auth/register", content=_register_body(), headers=headers)
    assert_problem(replay, 422, "idempotency_key_reused")


def test_a_response_carrying_a_token_is_not_kept_and_a_retry_logs_in_again(
    platform: Platform,
) -> None:
    key = uuid.uuid4().hex
    body = {"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
    auth = platform.client("auth")
    first = auth.post("/api/auth/login", json=body, headers={"Idempotency-Key": key})
    assert first.status_code == 200, first.text
    assert first.headers["cache-control"] == "no-store"
    assert platform.sql("SELECT 1 FROM auth.idempotency_keys WHERE key = $1", key) == []
    rows = platform.sql(
        "SELECT 1 FROM auth.idempotency_keys WHERE position($1 in convert_from(body, 'UTF8')) > 0",
        first.json()["accessToken"],
    )
    assert rows == []
    retry = auth.post("/api/auth/login", json=body, headers={"Idempotency-Key": key})
    assert retry.status_code == 200
    assert "idempotent-replayed" not in retry.headers
    assert retry.json()["accessToken"]


HOSTILE_REQUEST_IDS = [
    "x" * 129,
    "<script>alert(1)</script>",
    'id" injected="true',
    "id with spaces",
    "ok-prefix;rm -rf",
]


@pytest.mark.parametrize("hostile", HOSTILE_REQUEST_IDS)
def test_a_hostile_request_id_is_replaced_before_logs_and_headers(
    platform: Platform, hostile: str
) -> None:
    response = platform.client("address").get(
        "/api/addresses/not-a-uuid-path-check", headers={"X-Request-ID": hostile}
    )
    echoed = response.headers["x-request-id"]
    assert echoed != hostile
    assert re.fullmatch(r"[0-9a-f]{32}", echoed)
    eventually(
        lambda: logged(platform, "address", "request", request_id=echoed),
        timeout=5,
        every=0.05,
        what="the request being logged",
    )
    log_file = platform.supervisor.log_dir / "address.log"  # type: ignore[operator]
    assert hostile not in log_file.read_text(errors="replace")


def test_a_safe_request_id_is_kept(platform: Platform) -> None:
    offered = f"trace-{uuid.uuid4().hex}:1.2_a"
    response = platform.client("address").get("/health", headers={"X-Request-ID": offered})
    assert response.headers["x-request-id"] == offered


def test_the_development_manifests_secrets_are_all_refused_in_production() -> None:
    """compose and the development overlay publish their secrets: none may serve production."""
    dev_secrets = deploy_generator().DEV_SECRET_VALUES
    published = {value for value in dev_secrets.values() if value}
    assert published <= KNOWN_DEMO_VALUES
    assert {env_name(name) for name in SECRET_SETTINGS} <= set(dev_secrets)
