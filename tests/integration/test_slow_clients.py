"""Slow and oversized clients against a real server on 127.0.0.1: a request head must arrive
within the head timeout (408) and fit the head limit (431); keep-alive is bounded; the data
directory ``kinema serve`` writes is owner-only."""

from __future__ import annotations

import asyncio
import socket
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from kinema.api.serving import HEAD_TIMEOUT_S, KEEP_ALIVE_S, GuardedProtocol, uvicorn_options
from tests.fixtures.served import serving

# About the HTTP server's guard, not the job store.
pytestmark = [pytest.mark.integration, pytest.mark.embedded_only]

HALF_SENT = 100


class QuickGuard(GuardedProtocol):
    head_timeout_s = 0.5


async def _ok(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture
async def port() -> AsyncIterator[int]:
    """A uvicorn server in this loop with :class:`QuickGuard`, on a loopback port."""
    sock = socket.create_server(("127.0.0.1", 0))
    config = uvicorn.Config(
        _ok, http=QuickGuard, lifespan="off", log_level="error", timeout_keep_alive=KEEP_ALIVE_S
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        assert not task.done(), "server failed to start"
        await asyncio.sleep(0.01)
    yield sock.getsockname()[1]
    server.should_exit = True
    await asyncio.wait_for(task, 10)
    sock.close()


async def _send(port: int, data: bytes) -> bytes:
    """Send ``data`` and read the answer until the server closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


async def test_half_sent_heads_are_answered_408_and_closed(port: int) -> None:
    half = [
        asyncio.create_task(_send(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ab"))
        for _ in range(HALF_SENT)
    ]
    async with httpx.AsyncClient() as client:  # others are served meanwhile
        assert (await client.get(f"http://127.0.0.1:{port}/")).status_code == 200
    answers = await asyncio.gather(*half)
    assert all(a.startswith(b"HTTP/1.1 408 ") for a in answers), answers[0]
    assert answers[0].endswith(b'{"error": "request head not received within 0.5 s"}')
    silent = await _send(port, b"")  # a connection that never sends a byte is closed too
    assert silent.startswith(b"HTTP/1.1 408 ")


async def test_a_head_over_the_limit_is_431(port: int) -> None:
    big = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n"
    assert (await _send(port, big)).startswith(b"HTTP/1.1 431 ")
    endless = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 1_000_000  # never ends
    assert (await _send(port, endless)).startswith(b"HTTP/1.1 431 ")
    fine = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Fine: " + b"a" * 20_000
    assert (await _send(port, fine + b"\r\n\r\n")).startswith(b"HTTP/1.1 200 ")


async def test_a_slow_answer_is_not_timed_by_the_head_guard(port: int) -> None:
    # The guard times heads only: a body sent slowly after a complete head is the app's business.
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\na")
        await writer.drain()
        await asyncio.sleep(1.0)  # twice the head timeout
        writer.write(b"b")
        await writer.drain()
        assert (await asyncio.wait_for(reader.readline(), 10)).startswith(b"HTTP/1.1 200 ")
    finally:
        writer.close()


def test_kinema_serve_uses_the_guard() -> None:
    options = uvicorn_options()
    assert options["http"] is GuardedProtocol and options["timeout_keep_alive"] == KEEP_ALIVE_S
    assert HEAD_TIMEOUT_S <= 30


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_served_server_refuses_huge_heads_and_keeps_its_data_private(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with serving(data, "static", credits=1) as server:
        big = {"x-big": "a" * 200_000}
        assert httpx.get(server.url + "/healthz", headers=big).status_code == 431
        assert httpx.get(server.url + "/healthz").status_code == 200
        assert _mode(data) == 0o700
        for name in ("kinema.db", "secret.key"):
            assert _mode(data / name) == 0o600, name
        assert _mode(data / "files") == 0o700
