"""Least privilege in the database: every service connects as its own PostgreSQL role, which may
read and write its own schema's tables and nothing else."""

import uuid
from collections.abc import Awaitable, Callable

import asyncpg
import psutil
import pytest
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from laku.cli import app
from laku.core.database_roles import (
    role_password,
    role_url,
    service_database_urls,
    service_role,
)
from laku.core.services import PROCESSES, SERVICES
from laku.core.settings import get_settings
from laku.testing.database import plain_url, run
from laku.testing.platform import Platform


def _as_role(platform: Platform, service: str) -> str:
    """The test database's URL as the service's role (the test server trusts local logins)."""
    return plain_url(role_url(platform.database_url, service_role(service), None))


def _run_as(url: str, work: Callable[[asyncpg.Connection], Awaitable[object]]) -> object:
    """Run `work` on a connection as the URL's role, in a transaction that is rolled back."""

    async def go() -> object:
        conn = await asyncpg.connect(url)
        try:
            transaction = conn.transaction()
            await transaction.start()
            try:
                return await work(conn)
            finally:
                await transaction.rollback()
        finally:
            await conn.close()

    return run(go())


def _refused(url: str, statement: str, *args: object) -> str:
    """The statement fails for lack of privileges; the error's message."""
    with pytest.raises(asyncpg.InsufficientPrivilegeError) as refused:
        _run_as(url, lambda conn: conn.execute(statement, *args))
    return str(refused.value)


def test_role_names_passwords_and_urls() -> None:
    assert service_role("group-buying") == "laku_group_buying"
    assert role_password("secret", "laku_auth") == role_password("secret", "laku_auth")
    assert role_password("secret", "laku_auth") != role_password("secret", "laku_wallet")
    assert role_password("secret", "laku_auth") != role_password("other", "laku_auth")

    urls = service_database_urls(
        "postgresql://owner:pw@db.internal:5432/laku",
        PROCESSES,
        {"wallet": "postgresql://owner:pw@money.internal/laku"},
        secret="secret",
    )
    assert set(urls) == set(SERVICES)  # the web front end and sandboxes get no database
    wallet = role_password("secret", "laku_wallet")
    assert urls["wallet"] == f"postgresql://laku_wallet:{wallet}@money.internal/laku"
    auth = role_password("secret", "laku_auth")
    assert urls["auth"] == f"postgresql://laku_auth:{auth}@db.internal:5432/laku"
    # A socket URL (the embedded server's) keeps its host in the query.
    assert (
        role_url("postgresql://postgres:@/laku?host=/tmp/pg", "laku_order", None)
        == "postgresql://laku_order@/laku?host=/tmp/pg"
    )


def test_each_service_process_connects_as_its_own_role(platform: Platform) -> None:
    """Every connection a service process holds to the database is its own role's: matched by
    the process's client ports against the server's view of its sessions."""
    server_port = make_url(platform.database_url).port or 5432
    rows = platform.sql(
        "SELECT client_port, usename FROM pg_stat_activity "
        "WHERE datname = current_database() AND client_port > 0"
    )
    if not rows:
        pytest.skip("the test database is reached over a socket, not TCP")
    sessions = {row["client_port"]: row["usename"] for row in rows}
    for service in SERVICES:
        process = platform.supervisor.processes[service].process
        assert process is not None
        ports = {
            connection.laddr.port
            for connection in psutil.Process(process.pid).net_connections(kind="tcp")
            if connection.raddr and connection.raddr.port == server_port
        }
        roles = {sessions[port] for port in ports if port in sessions}
        assert roles == {service_role(service)}, (service, roles)


def test_warehouse_role_cannot_read_auth_signing_keys(platform: Platform) -> None:
    warehouse = _as_role(platform, "warehouse")
    message = _refused(warehouse, "SELECT private_key_encrypted FROM auth.signing_keys")
    assert "permission denied for schema auth" in message
    # Nor any other service's tables, nor the money.
    _refused(warehouse, "SELECT count(*) FROM wallet.user_wallets")
    _refused(warehouse, "SELECT count(*) FROM payment.payments")


def test_warehouse_role_cannot_write_another_schema(platform: Platform) -> None:
    warehouse = _as_role(platform, "warehouse")
    before = platform.sql("SELECT count(*) AS n FROM wallet.user_wallets")[0]["n"]
    _refused(
        warehouse,
        "INSERT INTO wallet.user_wallets (id, user_id, balance) VALUES ($1, $2, 1000000)",
        uuid.uuid4(),
        uuid.uuid4(),
    )
    _refused(warehouse, "UPDATE wallet.user_wallets SET balance = balance + 1")
    _refused(warehouse, "DELETE FROM auth.signing_keys")
    assert platform.sql("SELECT count(*) AS n FROM wallet.user_wallets")[0]["n"] == before


def test_warehouse_role_reads_and_writes_its_own_schema(platform: Platform) -> None:
    warehouse = _as_role(platform, "warehouse")
    variant_id = uuid.uuid4()

    async def write_then_read(conn: asyncpg.Connection) -> tuple[str, int]:
        await conn.execute(
            "INSERT INTO warehouse.warehouse_inventory (id, product_id, variant_id, factory_id, "
            "quantity, reserved_quantity, max_stock_level, reorder_threshold, surplus_quantity) "
            "VALUES ($1, $2, $3, $4, 7, 0, 100, 10, 0)",
            uuid.uuid4(),
            uuid.uuid4(),
            variant_id,
            uuid.uuid4(),
        )
        await conn.execute(
            "UPDATE warehouse.warehouse_inventory SET quantity = 8 WHERE variant_id = $1",
            variant_id,
        )
        quantity = await conn.fetchval(
            "SELECT quantity FROM warehouse.warehouse_inventory WHERE variant_id = $1", variant_id
        )
        await conn.execute(
            "DELETE FROM warehouse.warehouse_inventory WHERE variant_id = $1", variant_id
        )
        return await conn.fetchval("SELECT current_user"), quantity

    assert _run_as(warehouse, write_then_read) == ("laku_warehouse", 8)


def test_service_roles_cannot_change_definitions_or_migration_history(platform: Platform) -> None:
    warehouse = _as_role(platform, "warehouse")
    assert "permission denied for schema warehouse" in _refused(
        warehouse, "CREATE TABLE warehouse.smuggled (id int)"
    )
    assert "permission denied for schema public" in _refused(
        warehouse, "CREATE TABLE public.smuggled (id int)"
    )
    _refused(warehouse, "DROP TABLE warehouse.stock_movements")
    _refused(warehouse, "TRUNCATE warehouse.stock_movements")
    _refused(warehouse, "UPDATE warehouse.alembic_version SET version_num = 'x'")
    _refused(warehouse, "CREATE TEMPORARY TABLE smuggled (id int)")


def test_a_table_a_later_migration_creates_is_granted_to_its_service_only(
    platform: Platform,
) -> None:
    """Default privileges: what the migration role creates in a schema later is its service's
    at once, without another grant."""
    table = f"warehouse.later_{uuid.uuid4().hex[:8]}"
    platform.sql(f"CREATE TABLE {table} (id bigserial PRIMARY KEY, note text)")
    try:

        async def insert(conn: asyncpg.Connection) -> object:
            return await conn.fetchval(f"INSERT INTO {table} (note) VALUES ('x') RETURNING id")

        assert _run_as(_as_role(platform, "warehouse"), insert) == 1
        _refused(_as_role(platform, "wallet"), f"SELECT * FROM {table}")
    finally:
        platform.sql(f"DROP TABLE {table}")


def test_database_url_command_prints_a_services_own_url() -> None:
    env = {
        "LAKU_DATABASE_URL": "postgresql://laku_owner:owner-pw@db.internal:5432/laku",
        "LAKU_DATABASE_ROLE_SECRET": "role-secret",
    }
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["database-url", "wallet"], env=env)
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    password = role_password("role-secret", "laku_wallet")
    assert result.output.strip() == f"postgresql://laku_wallet:{password}@db.internal:5432/laku"
