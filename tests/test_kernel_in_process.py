"""Calls to a service hosted in the same process (laku.core.in_process) behave as over HTTP:
the callee's whole app answers, the caller's timeout holds, and a caller that gives up does
not cancel the work it asked for. Nothing listens on these ports: a call that went over the
network would fail to connect."""

import asyncio
from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI, Request

from laku.core.http import new_http_client
from tests.support import InProcessApp, in_process


class Callee:
    def __init__(self) -> None:
        self.app = FastAPI()
        self.finished: list[str] = []

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
def callee() -> Iterator[tuple[Callee, InProcessApp]]:
    hosted = Callee()
    with in_process(hosted.app) as served:
        yield hosted, served


async def test_a_hosted_app_answers_in_process_as_over_http(
    callee: tuple[Callee, InProcessApp],
) -> None:
    _, served = callee
    async with new_http_client(5.0) as http:
        for host in ("127.0.0.1", "localhost"):
            response = await http.post(
                served.url("/echo/ab%20c?x=1&y=2", host),
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
        missing = await http.get(served.url("/nothing-here"))
        assert missing.status_code == 404


async def test_an_app_not_serving_or_elsewhere_is_called_over_the_network(
    callee: tuple[Callee, InProcessApp],
) -> None:
    _, served = callee
    async with new_http_client(2.0) as http:
        # Another host's port of that number is not this process's app.
        with pytest.raises(httpx.ConnectError):
            await http.post(served.url("/echo/x", "127.0.0.2"), json={})
        served.serving = False  # stopping, or not started yet: as a closed port
        with pytest.raises(httpx.ConnectError):
            await http.post(served.url("/echo/x"), json={})


async def test_a_caller_that_times_out_does_not_cancel_the_callee(
    callee: tuple[Callee, InProcessApp],
) -> None:
    hosted, served = callee
    async with new_http_client(0.1) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.post(served.url("/slow"))
        assert hosted.finished == []
        await asyncio.sleep(0.7)
    assert hosted.finished == ["slow"]


async def test_an_app_that_fails_answers_500(callee: tuple[Callee, InProcessApp]) -> None:
    _, served = callee
    async with new_http_client(2.0) as http:
        response = await http.get(served.url("/fails"))
    assert response.status_code == 500
