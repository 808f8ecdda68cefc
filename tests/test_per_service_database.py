"""Room past one database server: payment and wallet on a PostgreSQL database of their own
(`LAKU_DATABASE_URLS`), every other service on the shared one, and the seed's whole flow still
passes; each database holds only its own services' schemas."""

import json
from collections.abc import Iterator

import pytest
from sqlalchemy.engine import make_url

from laku.core.migrations import migrate
from laku.core.services import SERVICES
from laku.core.settings import Settings
from laku.testing.database import plain_url, run, service_role_env, throwaway_database
from laku.testing.platform import (
    ADMIN_EMAIL,
    SECRETS_ENV,
    UNREACHED_RATE_LIMITS,
    Platform,
    free_port_offset,
    running_platform,
)
from tests import test_end_to_end

MOVED = ("payment", "wallet")


async def _schemas(url: str) -> set[str]:
    import asyncpg

    conn = await asyncpg.connect(plain_url(url))
    try:
        rows = await conn.fetch("SELECT schema_name FROM information_schema.schemata")
    finally:
        await conn.close()
    return {row["schema_name"] for row in rows} & {spec.schema for spec in SERVICES.values()}


@pytest.fixture(scope="module")
def split_platform(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    server = make_url(database_url).set(database="postgres").render_as_string(hide_password=False)
    others = [name for name in SERVICES if name not in MOVED]
    with (
        throwaway_database(server, services=others) as shared,
        throwaway_database(server, services=[]) as own,
    ):
        own_urls = dict.fromkeys(MOVED, own)
        # What `laku migrate` does with LAKU_DATABASE_URLS set: the moved ones go to their own.
        migrate(shared, list(MOVED), own_urls)
        env = {
            "LAKU_DATABASE_URL": shared,
            "LAKU_DATABASE_URLS": json.dumps(own_urls),
            "LAKU_PORT_OFFSET": str(free_port_offset()),
            "LAKU_ADMIN_EMAIL": ADMIN_EMAIL,
            **SECRETS_ENV,
            "LAKU_LOG_JSON": "true",
            "LAKU_PASSWORD_HASH_TIME_COST": "1",
            "LAKU_PASSWORD_HASH_MEMORY_KIB": "1024",
            # Beside the session's platform on one server: both within its default 100
            # connections.
            "LAKU_DATABASE_POOL_SIZE": "1",
            "LAKU_DATABASE_MAX_OVERFLOW": "1",
            "LAKU_RATE_LIMITS": json.dumps(UNREACHED_RATE_LIMITS),
        }
        with running_platform(
            env,
            shared,
            log_dir=tmp_path_factory.mktemp("split-service-logs"),
            service_env=service_role_env(shared, own_urls),
        ) as running:
            yield running


def test_settings_give_each_service_its_own_database_or_the_shared_one() -> None:
    settings = Settings(database_url="postgresql://db/shared", database_urls={"wallet": "x://w"})
    assert settings.database_url_for("wallet") == "x://w"
    assert settings.database_url_for("payment") == "postgresql://db/shared"


def test_seed_flow_with_payment_and_wallet_on_their_own_database(split_platform: Platform) -> None:
    test_end_to_end.test_the_seed_flow_from_setup_to_settlement(split_platform)

    shared = split_platform.database_url
    own = split_platform.settings.database_urls["payment"]
    assert run(_schemas(own)) == {"payment", "wallet"}
    assert run(_schemas(shared)) == {
        spec.schema for name, spec in SERVICES.items() if name not in MOVED
    }

    async def money_rows() -> tuple[int, int]:
        import asyncpg

        conn = await asyncpg.connect(plain_url(own))
        try:
            payments = await conn.fetchval("SELECT count(*) FROM payment.payments")
            credits = await conn.fetchval("SELECT count(*) FROM wallet.wallet_transactions")
        finally:
            await conn.close()
        return payments, credits

    payments, credits = run(money_rows())
    assert payments >= 2  # the flow's two buyers paid, into the database payment was given
    assert credits >= 2  # and their tier refunds reached their wallets there
