"""Several services in one process (design section 2): each keeps its own FastAPI app, port,
lifespan, schema, database pool and HTTP client, and they still call each other through
their clients, made in process (laku.core.in_process). One `uvicorn.Server` per app, all on
one event loop.

`laku up` runs the platform this way, because a Python process costs about 85 MiB in imports
alone: eighteen of them cost more than the whole platform needs. To use every core it runs
several such processes, each hosting every service on the same ports (`reuse_port`).
Deployments keep one service per process (`laku serve SERVICE`).
"""

import asyncio
import contextlib
import contextvars
import signal
import socket
from collections.abc import Iterator, Sequence

import structlog
import uvicorn

from laku.core.in_process import HostedApp, serve_in_process
from laku.core.services import PROCESSES, ProcessSpec
from laku.core.settings import Settings


class HostedServer(uvicorn.Server):
    """A uvicorn server that leaves the process's signals to its host, which stops every
    server it runs on one signal."""

    def __init__(self, config: uvicorn.Config, service: str, reuse_port: bool):
        super().__init__(config)
        self.service = service
        self.reuse_port = reuse_port

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        """With `reuse_port`, on a socket other processes listen on too: the kernel deals each
        new connection to one of them. Else uvicorn opens the port for this server alone."""
        if sockets is None and self.reuse_port:
            host = self.config.host
            sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, self.config.port))
            sockets = [sock]
        await super().serve(sockets)

    def serving(self) -> bool:
        return self.started and not self.should_exit

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _server(
    spec: ProcessSpec, settings: Settings, host: str, graceful_seconds: int, reuse_port: bool
) -> HostedServer:
    # What `laku serve` gives uvicorn, so a service behaves the same hosted or alone.
    config = uvicorn.Config(
        spec.app_factory,
        factory=True,
        host=host,
        port=spec.port + settings.port_offset,
        access_log=False,
        timeout_graceful_shutdown=graceful_seconds,
        proxy_headers=True,
        forwarded_allow_ips=settings.trusted_proxies,
    )
    return HostedServer(config, spec.name, reuse_port)


def _logging_as(service: str) -> contextvars.Context:
    """A context whose log lines name `service`: each server runs in its own, so the lines of
    every request it serves say which service served it."""
    context = contextvars.copy_context()
    context.run(structlog.contextvars.bind_contextvars, service=service)
    return context


def hosted_servers(
    services: Sequence[str],
    settings: Settings,
    *,
    host: str,
    graceful_seconds: int,
    reuse_port: bool,
) -> list[HostedServer]:
    return [
        _server(PROCESSES[name], settings, host, graceful_seconds, reuse_port) for name in services
    ]


async def serve_together(servers: Sequence[HostedServer]) -> int:
    """Run every server until SIGTERM or SIGINT (a second one stops without waiting), then
    stop them all gracefully: each stops accepting, lets its requests in flight finish, then
    runs its app's shutdown (background work, HTTP client, pool).
    Returns 0, or 1 when a server stopped on its own (its app failed to start, say): the others
    are then stopped too, so the process exits and its supervisor starts it again."""
    stopping = asyncio.Event()

    def stop() -> None:
        if stopping.is_set():
            for server in servers:
                server.force_exit = True
        stopping.set()

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop)
    running = []
    for server in servers:
        context = _logging_as(server.service)
        server.config.load()
        serve_in_process(
            server.config.port,
            HostedApp(server.config.loaded_app, server.config.host, context, server.serving),
        )
        running.append(asyncio.create_task(server.serve(), context=context))
    stop_requested = asyncio.create_task(stopping.wait())
    done, _ = await asyncio.wait([*running, stop_requested], return_when=asyncio.FIRST_COMPLETED)
    failed = stop_requested not in done
    for server in servers:
        server.should_exit = True
    stop_requested.cancel()
    results = await asyncio.gather(*running, return_exceptions=True)
    return 1 if failed or any(isinstance(result, BaseException) for result in results) else 0


def run_together(
    services: Sequence[str],
    settings: Settings,
    *,
    host: str,
    graceful_seconds: int,
    reuse_port: bool = False,
) -> int:
    """Serve `services` in this process on uvicorn's event loop (uvloop when installed) until
    stopped; the process's exit code."""
    servers = hosted_servers(
        services, settings, host=host, graceful_seconds=graceful_seconds, reuse_port=reuse_port
    )
    with asyncio.Runner(loop_factory=servers[0].config.get_loop_factory()) as runner:
        return runner.run(serve_together(servers))
