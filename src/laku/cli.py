"""`laku`: run the platform, migrate its databases, manage admin accounts."""

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import httpx
import typer
from rich.console import Console
from rich.table import Table

from laku.core.embedded_db import embedded_postgres
from laku.core.logging import configure_logging
from laku.core.services import PROCESSES, SERVICES
from laku.core.settings import Settings, get_settings
from laku.core.supervisor import Supervisor
from laku.demo import DemoLoadError, load_demo

app = typer.Typer(help="Laku group-buying platform.", no_args_is_help=True)
admin_app = typer.Typer(help="Admin accounts.", no_args_is_help=True)
app.add_typer(admin_app, name="admin")
console = Console()


@contextmanager
def _database(settings: Settings) -> Iterator[str]:
    """The configured database, else an embedded PostgreSQL under the data folder while in use."""
    if settings.database_url:
        yield settings.database_url
        return
    console.print(f"[dim]embedded PostgreSQL in {settings.data_dir / 'postgres'}[/]")
    with embedded_postgres(settings.data_dir) as url:
        yield url


@app.command("migrate")
def migrate_command(
    services: Annotated[
        list[str] | None, typer.Option("--service", "-s", help="Only these (repeatable)")
    ] = None,
) -> None:
    """Create the database if needed and bring every service's schema to its latest revision."""
    from laku.core.migrations import migrate

    with _database(get_settings()) as url:
        migrate(url, services)
    console.print("[green]migrated[/]")


@app.command("makemigration")
def makemigration_command(
    service: Annotated[str, typer.Argument(help="Service whose models changed")],
    message: Annotated[str, typer.Option("-m", "--message")],
) -> None:
    """Write a new Alembic revision for one service from its models' changes."""
    from laku.core.migrations import make_revision, migrate

    with _database(get_settings()) as url:
        migrate(url, [service])
        make_revision(service, url, message)


@app.command("up")
def up_command(
    services: Annotated[
        list[str] | None, typer.Option("--service", "-s", help="Only these (repeatable)")
    ] = None,
    demo: Annotated[
        bool, typer.Option(help="Load the demo data once every service is ready")
    ] = True,
) -> None:
    """Start every service on its port, wait until all are ready, load the demo data, keep them
    running until Ctrl-C."""
    settings = get_settings()
    configure_logging(settings, "supervisor")
    started = time.monotonic()
    services = services or list(PROCESSES)
    with _database(settings) as url:
        # In a child process: the supervisor then never loads Alembic and SQLAlchemy, and
        # stays small for as long as the platform runs.
        schemas = [f"--service={name}" for name in services if name in SERVICES]
        subprocess.run(
            [sys.executable, "-m", "laku", "migrate", *schemas],
            env={**os.environ, "LAKU_DATABASE_URL": url},
            check=True,
            stdout=subprocess.DEVNULL,
        )
        supervisor = Supervisor(
            settings,
            env={"LAKU_DATABASE_URL": url},
            services=services,
            log_dir=settings.data_dir / "logs",
        )
        _supervise(supervisor, settings, started, demo=demo and services == list(PROCESSES))


def _supervise(supervisor: Supervisor, settings: Settings, started: float, *, demo: bool) -> None:
    stopping = False

    def request_stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    supervisor.start()
    try:
        supervisor.wait_ready()
        _print_urls(supervisor, settings, time.monotonic() - started)
        if demo:
            _load_demo(settings)
        while not stopping:
            supervisor.restart_exited()
            time.sleep(0.5)
    finally:
        console.print("stopping...")
        supervisor.stop()


def _print_urls(supervisor: Supervisor, settings: Settings, seconds: float) -> None:
    table = Table(title=f"Laku is ready ({seconds:.1f} s) - Ctrl-C stops everything")
    table.add_column("service")
    table.add_column("url")
    table.add_column("api docs")
    for name in supervisor.services:
        url = PROCESSES[name].url(settings)
        table.add_row(name, url, "" if name == "web" else f"{url}/docs")
    if "web" in supervisor.services:
        console.print(f"[bold]Laku: {PROCESSES['web'].url(settings)}[/]  (admin console: /admin)")
    console.print(table)
    console.print(f"logs: {settings.data_dir / 'logs'}   admin: {settings.admin_email}")


def _load_demo(settings: Settings) -> None:
    try:
        data = load_demo(settings)
    except (DemoLoadError, httpx.HTTPError) as exc:
        console.print(f"[yellow]demo data not loaded: {exc}[/]")
        return
    web = PROCESSES["web"].url(settings)
    console.print(
        f"demo group buy [bold]{data.session_code}[/]: {web}/g/{data.session_code}\n"
        f"demo buyer: {data.buyer_email} / {data.buyer_password}   "
        f"factory staff: {data.factory_email} / {data.factory_password}"
    )


@admin_app.command("create")
def admin_create(
    email: Annotated[str, typer.Option(prompt=True)],
    name: Annotated[str, typer.Option(prompt=True)],
    password: Annotated[str, typer.Option(prompt=True, hide_input=True, confirmation_prompt=True)],
) -> None:
    """Create an admin account directly in auth-service's database."""
    from laku.auth.schemas import CreateUserRequest
    from laku.auth.service import create_user
    from laku.core.db import Database, async_url
    from laku.core.migrations import migrate
    from laku.core.security import Role

    request = CreateUserRequest(email=email, name=name, password=password, role=Role.ADMIN)

    async def create(url: str) -> None:
        db = Database(async_url(url), pool_size=1)
        try:
            async with db.sessions() as session:
                user = await create_user(session, request, Role.ADMIN)
        finally:
            await db.dispose()
        console.print(f"[green]admin {user.email} created ({user.id})[/]")

    with _database(get_settings()) as url:
        migrate(url, ["auth"])
        asyncio.run(create(url))
