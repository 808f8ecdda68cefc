"""Calls to a service hosted in the same process (laku.core.in_process) behave as over HTTP:
the callee's whole app answers, the caller's timeout holds, and a caller that gives up does
not cancel the work it asked for. Nothing listens on these ports: a call that went over the
network would fail to connect."""

import asyncio
import contextvars
import socket
from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI, Request

from laku.core.http import new_http_client
from laku.core.in_process import HostedApp, serve_in_process


def _unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Callee:
    def __init__(self) -> None:
        self.app = FastAPI()
        self.finished: list[str] = []
        self.serving = True

        @self.app.post("/echo/{name}")
        async def echo(name: str, request: Request) -> dict:
            return {
                "name": name,
                "body": await request.json(),
                "query": dict(request.query_params),
                "key": request.headers.get("idempotency-key"),
                "client": request.client.host if request.client else None,
            }

        @self.app.post("/slow")
        async def slow() -> dict:
            await asyncio.sleep(0.5)
            self.finished.append("slow")
            return {}

        @self.app.get("/fails")
        async def fails() -> dict:
            raise RuntimeError("a bug")


@pytest.fixture
def callee() -> Iterator[tuple[Callee, int]]:
    hosted = Callee()
    port = _unused_port()
    serve_in_process(
        port, HostedApp(hosted.app, "127.0.0.1", contextvars.Context(), lambda: hosted.serving)
    )
    yield hosted, port
    hosted.serving = False


async def test_a_hosted_app_answers_in_process_as_over_http(callee: tuple[Callee, int]) -> None:
    _, port = callee
    async with new_http_client(5.0) as http:
        for host in ("127.0.0.1", "localhost"):
            response = await http.post(
                f"http://{host}:{port}/echo/ab%20c?x=1&y=2",
                json={"amount": 95_000},
                headers={"Idempotency-Key": "k-1"},
            )
            assert response.status_code == 200, response.text
            assert response.headers["content-type"] == "application/json"
            assert response.json() == {
                "name": "ab c",
                "body": {"amount": 95_000},
                "query": {"x": "1", "y": "2"},
                "key": "k-1",
                "client": "127.0.0.1",
            }
        missing = await http.get(f"http://127.0.0.1:{port}/nothing-here")
        assert missing.status_code == 404


async def test_an_app_not_serving_or_elsewhere_is_called_over_the_network(
    callee: tuple[Callee, int],
) -> None:
    hosted, port = callee
    async with new_http_client(2.0) as http:
        # Another host's port of that number is not this process's app.
        with pytest.raises(httpx.ConnectError):
            await http.post(f"http://127.0.0.2:{port}/echo/x", json={})
        hosted.serving = False  # stopping, or not started yet: as a closed port
        with pytest.raises(httpx.ConnectError):
            await http.post(f"http://127.0.0.1:{port}/echo/x", json={})


async def test_a_caller_that_times_out_does_not_cancel_the_callee(
    callee: tuple[Callee, int],
) -> None:
    hosted, port = callee
    async with new_http_client(0.1) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.post(f"http://127.0.0.1:{port}/slow")
        assert hosted.finished == []
        await asyncio.sleep(0.7)
    assert hosted.finished == ["slow"]


async def test_an_app_that_fails_answers_500(callee: tuple[Callee, int]) -> None:
    _, port = callee
    async with new_http_client(2.0) as http:
        response = await http.get(f"http://127.0.0.1:{port}/fails")
    assert response.status_code == 500
