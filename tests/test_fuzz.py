"""Hostile input gets a 4xx, never a 5xx, and every response matches its documented schema.

Schemathesis generates requests from each service's own `/openapi.json` and sends them as an
admin, a buyer, a factory user and with no token. The platform here is its own (its own
database and processes, with the suite's settings), so what the fuzzer creates disturbs no other
test and no account of theirs is locked out. The examples come from a fixed seed
(`LAKU_FUZZ_SEED` to replay another); a failure names the seed, service, operation, caller and
a curl command that replays the case.
"""

import os
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from laku.core.services import SERVICES
from laku.core.settings import Settings
from laku.core.supervisor import Supervisor
from laku.providers.biteship.client import WEBHOOK_SECRET_HEADER
from tests.support import (
    Platform,
    bearer,
    free_port_offset,
    snapshot,
    throwaway_database,
)

SEED = int(os.environ.get("LAKU_FUZZ_SEED", "20261201"))
# Examples per operation and caller: the admin passes every authorisation, so its requests
# reach the most code; the others mostly prove a refusal stays a 4xx.
EXAMPLES = {"admin": 12, "buyer": 4, "factory": 4, "anonymous": 3}
CHECKS = [not_a_server_error, response_schema_conformance]
# Probes for orchestrators, not part of any service's API.
_PROBES = {"/health", "/ready", "/metrics"}
PASSWORD = "fuzz-password-123"


@dataclass
class Failure:
    service: str
    operation: str
    caller: str
    message: str
    curl: str

    def __str__(self) -> str:
        return (
            f"[{self.service}] {self.operation} as {self.caller}: {self.message}\n"
            f"  replay: {self.curl}"
        )


@dataclass
class Tally:
    operations: set[str] = field(default_factory=set)
    cases: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    seconds: Counter[str] = field(default_factory=Counter)
    failures: list[Failure] = field(default_factory=list)


@pytest.fixture(scope="module")
def fuzz_platform(
    platform: Platform, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    """A platform of its own, started with the suite's settings on another database."""
    with throwaway_database(platform.database_url) as database_url:
        env = {
            **platform.supervisor.env,
            "LAKU_DATABASE_URL": database_url,
            "LAKU_PORT_OFFSET": str(free_port_offset()),
        }
        env.pop("LAKU_TRACE_DIR", None)
        settings = Settings(**{k.removeprefix("LAKU_").lower(): v for k, v in env.items()})
        log_dir = Path(tmp_path_factory.mktemp("fuzz-logs"))
        supervisor = Supervisor(settings, env=env, log_dir=log_dir)
        supervisor.start()
        running = Platform(settings=settings, database_url=database_url, supervisor=supervisor)
        try:
            supervisor.wait_ready()
            yield running
        finally:
            running.close()
            supervisor.stop()


def _callers(platform: Platform) -> dict[str, dict[str, str]]:
    """The fuzzer's own accounts (never the suite's admin, whom failed logins could lock)."""
    auth = platform.client("auth")
    admin = bearer(platform.admin_token)
    suffix = uuid.uuid4().hex[:8]

    def created(response) -> dict:
        assert response.is_success, response.text
        return response.json()

    fuzz_admin = f"fuzz-admin-{suffix}@laku.id"
    created(
        auth.post(
            "/api/auth/users",
            headers=admin,
            json={"email": fuzz_admin, "password": PASSWORD, "name": "Fuzz", "role": "admin"},
        )
    )
    buyer = platform.new_buyer("Fuzz buyer")
    factory = created(
        platform.client("factory").post(
            "/api/factories",
            headers=admin,
            json={
                "name": "Pabrik Fuzz",
                "ownerName": "Fuzz",
                "phone": "+6281200000000",
                "address": "Jl. Fuzz 1",
                "postalCode": "12190",
            },
        )
    )
    factory_user = f"fuzz-factory-{suffix}@laku.id"
    created(
        platform.client("factory").post(
            f"/api/factories/{factory['id']}/users",
            headers=admin,
            json={"email": factory_user, "password": PASSWORD, "name": "Fuzz"},
        )
    )
    return {
        "admin": bearer(platform.login(fuzz_admin, PASSWORD)),
        "buyer": buyer.headers,
        "factory": bearer(platform.login(factory_user, PASSWORD)),
        "anonymous": {},
    }


def _provider_headers(platform: Platform) -> dict[str, str]:
    """Webhooks are fuzzed with their providers' valid tokens, so their bodies are parsed."""
    settings = platform.settings
    return {
        "x-callback-token": settings.xendit_callback_token.get_secret_value(),
        WEBHOOK_SECRET_HEADER: settings.biteship_webhook_secret.get_secret_value(),
    }


def _fuzz_operation(
    operation,
    base_url: str,
    session: requests.Session,
    service: str,
    caller: str,
    headers: dict[str, str],
    tally: Tally,
) -> None:
    label = operation.label
    failures: list[Failure] = []

    @hypothesis.seed(SEED)
    @hypothesis.settings(
        max_examples=EXAMPLES[caller],
        database=None,
        deadline=None,
        derandomize=False,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        verbosity=hypothesis.Verbosity.quiet,
    )
    @hypothesis.given(case=operation.as_strategy())
    def fuzz(case) -> None:
        tally.cases[service] += 1
        t0 = time.monotonic()
        try:
            response = case.call(base_url=base_url, session=session, headers=headers, timeout=30)
        except requests.RequestException as exc:
            failures.append(Failure(service, label, caller, repr(exc), case.as_curl_command()))
            return
        tally.statuses[response.status_code] += 1
        t1 = time.monotonic()
        tally.seconds["call"] += t1 - t0
        try:
            case.validate_response(response, checks=CHECKS, headers=headers)
        except (AssertionError, BaseExceptionGroup) as exc:  # a check failed: record, go on
            curl = case.as_curl_command(headers=headers)
            failures.append(Failure(service, label, caller, str(exc)[:2000], curl))
        tally.seconds["validate"] += time.monotonic() - t1

    fuzz()
    tally.operations.add(f"{service} {label}")
    # The first failure of an operation is enough to replay it.
    tally.failures.extend(failures[:1])


def test_hostile_input_never_gets_a_server_error(fuzz_platform: Platform) -> None:
    callers = _callers(fuzz_platform)
    provider_headers = _provider_headers(fuzz_platform)
    tally = Tally()
    started = time.monotonic()
    before = snapshot(
        fuzz_platform, *(spec.schema for spec in SERVICES.values() if spec.name != "auth")
    )
    for caller in ("anonymous", "buyer", "factory", "admin"):
        for name in SERVICES:
            base_url = fuzz_platform.url(name)
            schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
            with requests.Session() as session:
                for result in schema.get_all_operations():
                    operation = result.ok()
                    if operation.path in _PROBES:
                        continue
                    headers = dict(callers[caller])
                    if operation.path.endswith("/webhook"):
                        headers = {**provider_headers}
                    _fuzz_operation(operation, base_url, session, name, caller, headers, tally)
        if caller == "anonymous":
            after = snapshot(
                fuzz_platform, *(spec.schema for spec in SERVICES.values() if spec.name != "auth")
            )
            assert after == before, "requests without a token changed the platform's data"
    elapsed = time.monotonic() - started
    total = sum(tally.cases.values())
    print(
        f"\nfuzz (seed {SEED}): {len(tally.operations)} operations, {total} cases in "
        f"{elapsed:.0f} s; per service {dict(tally.cases)}; statuses {dict(tally.statuses)} {dict(tally.seconds)}"
    )
    assert not tally.failures, (
        f"{len(tally.failures)} failures (seed {SEED}, LAKU_FUZZ_SEED to change it):\n"
        + "\n".join(str(failure) for failure in tally.failures)
    )
