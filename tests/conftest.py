import json
import os
from collections.abc import Iterator

import pytest
from hypothesis import settings

from laku.testing.database import database_server, service_role_env, throwaway_database
from laku.testing.platform import (
    ADMIN_EMAIL,
    SECRETS_ENV,
    UNREACHED_RATE_LIMITS,
    Platform,
    free_port_offset,
    running_platform,
)

# In CI every Hypothesis test draws the same examples each run, so a failure there replays.
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") == "true" else "default")


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with (
        database_server(tmp_path_factory.mktemp("embedded-pg")) as server,
        throwaway_database(server) as url,
    ):
        yield url


def _platform_env(database_url: str) -> dict[str, str]:
    env = {
        "LAKU_DATABASE_URL": database_url,
        "LAKU_PORT_OFFSET": str(free_port_offset()),
        "LAKU_ADMIN_EMAIL": ADMIN_EMAIL,
        **SECRETS_ENV,
        "LAKU_LOG_JSON": "true",
        # No close in the background: a session closes when a test calls process-expired, so
        # no close lands under another test's whole-schema snapshot (test_chaos runs its own
        # platform with the scheduler on).
        "LAKU_CLOSE_INTERVAL_SECONDS": "0",
        # Cheap password hashes: tests register hundreds of buyers on two cores.
        "LAKU_PASSWORD_HASH_TIME_COST": "1",
        "LAKU_PASSWORD_HASH_MEMORY_KIB": "1024",
        # Purges run often enough for a test to see them (they touch only rows past retention).
        "LAKU_RETENTION_INTERVAL_SECONDS": "2",
        # Overdue payments are read back from Xendit within a test's patience.
        "LAKU_OVERDUE_PAYMENT_SWEEP_INTERVAL_SECONDS": "1",
        # The sweepers look for lapsed stock holds every second; the tests that need one to
        # lapse move its expiry into the past, as other tests move a session's end time. A
        # join's hold outlasts its invoice by an hour, longer than the suite runs, so no
        # hold of a short session lapses on its own under another test.
        "LAKU_RESERVATION_SWEEP_INTERVAL_SECONDS": "1",
        "LAKU_JOIN_SWEEP_INTERVAL_SECONDS": "1",
        "LAKU_RESERVATION_HOLD_GRACE_SECONDS": "3600",
    }
    env["LAKU_RATE_LIMITS"] = json.dumps(UNREACHED_RATE_LIMITS)
    return env


@pytest.fixture(scope="session")
def platform(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """Every service as its own uvicorn process on a fresh database."""
    env = _platform_env(database_url)
    # Every process writes its spans here (tests/test_tracing.py reads one trace across them).
    env["LAKU_TRACE_DIR"] = str(tmp_path_factory.mktemp("traces"))
    with running_platform(
        env,
        database_url,
        log_dir=tmp_path_factory.mktemp("service-logs"),
        service_env=service_role_env(database_url),
    ) as running:
        yield running


@pytest.fixture(scope="module")
def own_platform(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """A platform of its own on another database, for a module that audits the whole platform:
    there every row must come from the module's real flows, not from other tests' probes (a
    reservation no participant holds, a payment no group buy made)."""
    with (
        throwaway_database(database_url) as own_database,
        running_platform(
            _platform_env(own_database),
            own_database,
            log_dir=tmp_path_factory.mktemp("own-service-logs"),
            service_env=service_role_env(own_database),
        ) as running,
    ):
        yield running
