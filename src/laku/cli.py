"""`laku`: run the platform, migrate its databases, manage admin accounts."""

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import httpx
import typer
from rich.console import Console
from rich.table import Table

from laku.core.database_roles import (
    ROLE_SECRET_VARIABLE,
    role_secret_from_environment,
    service_database_urls,
)
from laku.core.embedded_db import (
    embedded_migrations_record,
    embedded_postgres,
    migrations_fingerprint,
)
from laku.core.logging import configure_logging
from laku.core.secrets import (
    UnsafeSettings,
    check_startup,
    development_role_secret,
    development_secrets,
    env_name,
    secrets_dir,
    with_development_secrets,
)
from laku.core.services import PROCESSES, SERVICES, service_url
from laku.core.settings import Settings, get_settings
from laku.core.supervisor import Supervisor
from laku.demo import DemoLoadError, load_demo

if TYPE_CHECKING:  # loaded by `laku audit` only: the supervisor stays small
    from laku.core.audit import AuditOut, InvariantOut

app = typer.Typer(help="Laku group-buying platform.", no_args_is_help=True)
admin_app = typer.Typer(help="Admin accounts.", no_args_is_help=True)
app.add_typer(admin_app, name="admin")
keys_app = typer.Typer(help="Token signing keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
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


def _startable_settings() -> tuple[Settings, dict[str, str]]:
    """The settings this process and the ones it starts run with: in development, the secrets
    not set are taken from the data folder (generated there once) and put in the environment,
    which `get_settings()` and every child read. Exits with a message naming each setting that
    may not be started with (design 14). Returns the settings and the secrets taken."""
    generated = development_secrets(get_settings())
    if generated:
        os.environ.update(generated)
        get_settings.cache_clear()
    settings = get_settings()
    try:
        check_startup(settings)
    except UnsafeSettings as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from exc
    return settings, generated


@app.command("migrate")
def migrate_command(
    services: Annotated[
        list[str] | None, typer.Option("--service", "-s", help="Only these (repeatable)")
    ] = None,
) -> None:
    """Create the database if needed, bring every service's schema to its latest revision and
    let each service's role (`laku_<service>`) use its schema, and only it. Run it as the role
    that owns the schemas (the database's owner)."""
    from laku.core.migrations import migrate

    settings = get_settings()
    with _database(settings) as url:
        migrate(url, services or None, settings.database_urls, role_secret_from_environment())
    console.print("[green]migrated[/]")


@app.command("database-url")
def database_url_command(
    service: Annotated[str, typer.Argument(help="A service with a database, e.g. wallet")],
) -> None:
    """Print the URL the service connects with: its own role on its database, the password
    derived from LAKU_DATABASE_ROLE_SECRET (what `laku migrate` set), for its deployment's
    LAKU_DATABASE_URL."""
    settings = get_settings()
    role_secret = role_secret_from_environment()
    if service not in SERVICES:
        raise typer.BadParameter(f"no database for {service!r}; one of {', '.join(SERVICES)}")
    if not settings.database_url or not role_secret:
        raise typer.BadParameter(f"set LAKU_DATABASE_URL and {ROLE_SECRET_VARIABLE}")
    urls = service_database_urls(
        settings.database_url, [service], settings.database_urls, role_secret
    )
    print(urls[service])


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


@app.command("serve")
def serve_command(
    service: Annotated[str, typer.Argument(help="A service or sandbox, e.g. group-buying")],
    host: Annotated[str, typer.Option(help="Address to listen on")] = "0.0.0.0",
    port: Annotated[
        int | None, typer.Option(help="Port to listen on (default: its own, plus the offset)")
    ] = None,
    graceful_seconds: Annotated[
        int, typer.Option(help="On SIGTERM, how long requests in flight may take to finish")
    ] = 20,
) -> None:
    """Run one service (or sandbox) in this process, as a container does. SIGTERM stops it
    gracefully: no new connections, requests in flight finish, background work stops, then its
    database pool closes."""
    import uvicorn

    if service not in PROCESSES:
        raise typer.BadParameter(f"unknown service {service!r}; one of {', '.join(PROCESSES)}")
    settings, _ = _startable_settings()
    spec = PROCESSES[service]
    uvicorn.run(
        spec.app_factory,
        factory=True,
        host=host,
        port=port if port is not None else spec.port + settings.port_offset,
        access_log=False,
        timeout_graceful_shutdown=graceful_seconds,
        # X-Forwarded-For names the client only from a proxy the settings trust (rate limits
        # count per client address); from anyone else it is ignored.
        proxy_headers=True,
        forwarded_allow_ips=settings.trusted_proxies,
    )


@app.command("host")
def host_command(
    services: Annotated[list[str], typer.Argument(help="Services and sandboxes to run together")],
    host: Annotated[str, typer.Option(help="Address to listen on")] = "0.0.0.0",
    graceful_seconds: Annotated[
        int, typer.Option(help="On SIGTERM, how long requests in flight may take to finish")
    ] = 20,
    reuse_port: Annotated[
        bool,
        typer.Option(help="Share each port with other processes serving it (SO_REUSEPORT)"),
    ] = False,
) -> None:
    """Run several services (or sandboxes) in this process, each its own app on its own port
    (plus the offset), as `laku up` does; calls between them are made in process. SIGTERM
    stops them all gracefully, as `serve` does."""
    from laku.core.hosting import run_together

    unknown = [name for name in services if name not in PROCESSES]
    if unknown:
        raise typer.BadParameter(f"unknown {unknown}; each one of {', '.join(PROCESSES)}")
    settings, _ = _startable_settings()
    code = run_together(
        services, settings, host=host, graceful_seconds=graceful_seconds, reuse_port=reuse_port
    )
    raise typer.Exit(code)


@app.command("healthcheck")
def healthcheck_command(
    service: Annotated[
        str | None,
        typer.Argument(help="The service this container runs (default: $LAKU_SERVICE, else all)"),
    ] = None,
) -> None:
    """Exit 0 when the service (or every process of `laku up`) answers /health on this host:
    the container image's HEALTHCHECK."""
    settings = get_settings()
    name = service or os.environ.get("LAKU_SERVICE")
    names = [name] if name else list(PROCESSES)
    with httpx.Client(timeout=2.0) as client:
        for each in names:
            port = PROCESSES[each].port + settings.port_offset
            try:
                client.get(f"http://127.0.0.1:{port}/health").raise_for_status()
            except httpx.HTTPError as exc:
                console.print(f"{each}: {exc}")
                raise typer.Exit(1) from exc


@app.command("up")
def up_command(
    services: Annotated[
        list[str] | None, typer.Option("--service", "-s", help="Only these (repeatable)")
    ] = None,
    demo: Annotated[
        bool, typer.Option(help="Load the demo data once every service is ready")
    ] = True,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            "-w",
            help="Processes that each serve every service: one is lightest, one per core uses "
            "every core; 0: one process per service, as deployments run them",
            min=0,
        ),
    ] = 1,
) -> None:
    """Start every service on its port, wait until all are ready, load the demo data (in
    development), keep them running until Ctrl-C. Secrets not set are generated once into the
    data folder and reused on every start."""
    settings, generated = _startable_settings()
    configure_logging(settings, "supervisor")
    started = time.monotonic()
    services = services or list(PROCESSES)
    # The services' roles get their passwords from this secret: the environment's, else (in
    # development) the data folder's, made on the first start.
    role_secret = role_secret_from_environment() or development_role_secret(settings)
    with _database(settings) as url:
        _migrate_for_up(settings, url, [name for name in services if name in SERVICES], role_secret)
        supervisor = _platform_supervisor(settings, url, services, workers, role_secret, generated)
        demo = demo and settings.env == "development" and services == list(PROCESSES)
        generated_password = env_name("admin_password") in generated
        admin_password_file = (
            secrets_dir(settings) / "admin_password" if generated_password else None
        )
        _supervise(
            supervisor, settings, started, demo=demo, admin_password_file=admin_password_file
        )


def _migrate_for_up(settings: Settings, url: str, schemas: list[str], role_secret: str) -> None:
    """Migrate in a child process: the supervisor then never loads Alembic and SQLAlchemy,
    and stays small for as long as the platform runs. The embedded database records what it
    was migrated with, so a `make up` with no new migration skips that (over a second); its
    roles keep the passwords they were given, from the data folder's role secret."""
    record = embedded_migrations_record(settings.data_dir) if not settings.database_url else None
    fingerprint = migrations_fingerprint(schemas)
    if record is not None and record.is_file() and record.read_text() == fingerprint:
        return
    subprocess.run(
        [sys.executable, "-m", "laku", "migrate", *(f"--service={name}" for name in schemas)],
        env={**os.environ, "LAKU_DATABASE_URL": url, ROLE_SECRET_VARIABLE: role_secret},
        check=True,
        stdout=subprocess.DEVNULL,
    )
    if record is not None:
        record.write_text(fingerprint)


def _platform_supervisor(
    settings: Settings,
    database_url: str,
    services: list[str],
    workers: int,
    role_secret: str,
    generated: dict[str, str],
) -> Supervisor:
    """What `laku up` runs: `workers` host processes, each serving every service, or one
    process each (0). A Python process costs about 85 MiB in imports alone, and each
    process's pools keep their own idle connections (a PostgreSQL backend of about 17 MiB
    each): one host is the lightest (bench/idle_memory.py), one per core uses every core.
    Each service connects as its own role, to its own database if it has one; a process gets
    the URLs of the services it runs, and the processes without a database get none."""
    own_urls = service_database_urls(database_url, services, settings.database_urls, role_secret)
    if workers:
        every_url = {"LAKU_DATABASE_URLS": json.dumps(own_urls)}
        process_env = {f"host-{n}": every_url for n in range(1, workers + 1)}
    else:
        process_env = {name: {"LAKU_DATABASE_URL": url} for name, url in own_urls.items()}
    return Supervisor(
        settings,
        env={"LAKU_DATABASE_URL": "", "LAKU_DATABASE_URLS": "{}", **generated},
        service_env=process_env,
        services=services,
        log_dir=settings.data_dir / "logs",
        hosts=workers or None,
    )


def _supervise(
    supervisor: Supervisor,
    settings: Settings,
    started: float,
    *,
    demo: bool,
    admin_password_file: Path | None,
) -> None:
    stopping = False

    def request_stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    supervisor.start()
    try:
        supervisor.wait_ready()
        _print_urls(supervisor, settings, time.monotonic() - started, admin_password_file)
        if demo:
            _load_demo(settings)
        while not stopping:
            supervisor.restart_exited()
            time.sleep(0.5)
    finally:
        console.print("stopping...")
        supervisor.stop()


def _print_urls(
    supervisor: Supervisor, settings: Settings, seconds: float, admin_password_file: Path | None
) -> None:
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
    if admin_password_file is not None:
        console.print(
            f"admin password: in {admin_password_file} (generated once; "
            "LAKU_ADMIN_PASSWORD chooses one)",
            soft_wrap=True,  # a path cut in two cannot be copied
        )


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


@app.command("audit")
def audit_command(
    grace: Annotated[
        float,
        typer.Option(help="Seconds: rows changed this recently are in flight, not judged"),
    ] = 120.0,
    as_json: Annotated[bool, typer.Option("--json", help="The report as JSON")] = False,
) -> None:
    """Check the money and stock invariants across the running services (stock against its
    ledger, each payment's escrow, wallets, the settlement ledger, participants' holds and
    payments); one line per invariant with its figures. Exits 1 on any violation, 2 when the
    audit could not run."""
    from datetime import timedelta

    from laku.audit import AUDIT_TIMEOUT_SECONDS, AuditClients, run_audit
    from laku.core.errors import DomainError
    from laku.core.http import new_http_client

    settings = get_settings()
    if settings.admin_password is None:  # development: the one `laku up` generated
        settings = with_development_secrets(settings)

    async def audit() -> "AuditOut":
        async with new_http_client(AUDIT_TIMEOUT_SECONDS) as http:
            tokens = AdminLogin(http, settings)
            return await run_audit(
                AuditClients.connect(settings, http, tokens), timedelta(seconds=grace)
            )

    try:
        report = asyncio.run(audit())
    except (DomainError, httpx.HTTPError) as exc:
        # A service down or refusing the admin: no verdict, which is not a clean one either.
        typer.echo(f"audit not run: {exc}", err=True)
        raise typer.Exit(2) from exc
    if as_json:
        print(report.model_dump_json(indent=2))
    else:
        for item in report.invariants:
            _print_invariant(item)
    raise typer.Exit(0 if report.ok else 1)


def _print_invariant(item: "InvariantOut") -> None:
    """One line: ok or VIOLATION, the invariant, its figures; then its first offenders."""
    figures = ", ".join(f"{name} {value:,}" for name, value in item.figures.items())
    if item.ok:
        typer.echo(f"{typer.style('ok', fg='green')}        {item.name}: {figures}")
        return
    typer.echo(
        f"{typer.style('VIOLATION', fg='red', bold=True)} {item.name}: "
        f"{item.violations:,} broken; {figures}"
    )
    for offender in item.offenders:
        typer.echo(f"          {offender}")


class AdminLogin:
    """The admin's token (`LAKU_ADMIN_EMAIL`, `LAKU_ADMIN_PASSWORD`), logged in once."""

    def __init__(self, http: httpx.AsyncClient, settings: Settings):
        self._http = http
        self._settings = settings
        self._token: str | None = None

    async def token(self) -> str:
        if self._token is None:
            response = await self._http.post(
                f"{service_url('auth', self._settings)}/api/auth/login",
                json={
                    "email": self._settings.admin_email,
                    "password": self._settings.admin_password.get_secret_value(),
                },
            )
            response.raise_for_status()
            self._token = response.json()["accessToken"]
        return self._token


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


@keys_app.command("rotate")
def keys_rotate() -> None:
    """Make a new signing key that signs every token from now on. Running auth processes take
    it up within `signing_key_reload_seconds`; tokens the previous key signed stay valid until
    they expire (it stays published in the JWKS meanwhile), so nobody is logged out."""
    from laku.auth.keys import KeyCipher, rotate
    from laku.core.db import Database, async_url

    settings = get_settings()
    try:
        cipher = KeyCipher.from_settings(settings)
    except RuntimeError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from exc

    async def rotate_keys(url: str) -> str:
        db = Database(async_url(url), pool_size=1)
        try:
            async with db.sessions() as session:
                return await rotate(session, cipher)
        finally:
            await db.dispose()

    auth_database = settings.database_url_for("auth")
    if auth_database:
        kid = asyncio.run(rotate_keys(auth_database))
    else:
        with _database(settings) as url:
            kid = asyncio.run(rotate_keys(url))
    console.print(f"[green]new signing key {kid}[/]")
