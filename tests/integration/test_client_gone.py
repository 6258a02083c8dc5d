"""A sync client that leaves before its generation finishes is not charged: its job is
cancelled (queued: at once; running: at its next step) and refunded — through a real uvicorn
server on 127.0.0.1, where a disconnect is a closed socket."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from sqlalchemy import select

from kinema.jobs.models import Job
from kinema.jobs.service import CANCELLED, CLIENT_GONE
from kinema.store.tables import jobs
from tests.conftest import Ctx, app_context, ledger_and_balance, make_settings, png, start_runner

pytestmark = pytest.mark.integration

B64 = base64.b64encode(png()).decode()


@contextlib.asynccontextmanager
async def _served(tmp_path: Path) -> AsyncIterator[tuple[Ctx, str]]:
    """An app on the slow test video engine behind a real uvicorn server on a loopback port:
    (its context, the sync video URL)."""
    runner = await start_runner(["test-slow-video", "test-echo-image"], tmp_path / "m")
    settings = make_settings(
        tmp_path,
        engines={"preset": "custom", "video_preset": "test-slow-video"},
        jobs={"poll_interval_s": 0.1},
    )
    settings.engines.image_preset = "test-echo-image"
    sock = socket.create_server(("127.0.0.1", 0))
    try:
        async with app_context(settings, runner) as c:
            server = uvicorn.Server(uvicorn.Config(c.app, lifespan="off", log_level="error"))
            serve = asyncio.create_task(server.serve(sockets=[sock]))
            for _ in range(500):  # bounded: 5 s
                if server.started:
                    break
                await asyncio.sleep(0.01)
            port = sock.getsockname()[1]
            try:
                yield c, f"http://127.0.0.1:{port}/v1/kling-3-standard-image2video"
            finally:
                server.should_exit = True
                await asyncio.wait_for(serve, 10)
    finally:
        sock.close()
        await runner.close()


async def test_a_sync_client_that_disconnects_is_refunded(tmp_path: Path) -> None:
    async with _served(tmp_path) as (c, url):
        key = await c.key(credits=5)
        body = {"start_image_url": B64, "prompt": "steps=600", "duration": "10"}
        async with httpx.AsyncClient(timeout=1.5) as client:
            with pytest.raises(httpx.ReadTimeout):  # gives up on a 60 s generation
                await client.post(url, json=body, headers={"x-api-key": key})
        record = await c.svc.keys.authenticate(key)
        for _ in range(200):
            job = await _only_job(c)
            if job is not None and job.status.final:
                break
            await asyncio.sleep(0.05)
        assert job is not None and job.status.value == "FAILED"
        assert job.error in (CLIENT_GONE, CANCELLED)  # queued / running when it left
        assert await ledger_and_balance(c.svc, record.id) == (5_000_000, 5_000_000)


async def _only_job(c: Ctx) -> Job | None:
    """The app's one job (its database is its own)."""
    ids = await c.svc.db.read(lambda conn: [r.id for r in conn.execute(select(jobs.c.id))])
    assert len(ids) <= 1
    return await c.svc.jobs.get(ids[0]) if ids else None


async def test_a_client_with_an_idempotency_key_can_come_back_for_its_video(
    tmp_path: Path,
) -> None:
    """With an Idempotency-Key the client said it may retry: its disconnect does not cancel the
    job, and the retry attaches to it and gets the video, charged once."""
    async with _served(tmp_path) as (c, url):
        key = await c.key(credits=5)
        body = {"start_image_url": B64, "prompt": "steps=30", "duration": "3"}
        h = {"x-api-key": key, "Idempotency-Key": "come-back"}
        async with httpx.AsyncClient(timeout=1.0) as client:
            with pytest.raises(httpx.ReadTimeout):
                await client.post(url, json=body, headers=h)
        await asyncio.sleep(1.0)  # longer than the disconnect takes to notice
        job = await _only_job(c)
        assert job is not None and not job.status.final
        async with httpx.AsyncClient(timeout=30) as client:
            r = await client.post(url, json=body, headers=h)
        assert r.status_code == 200 and r.headers["content-type"] == "video/mp4"
        assert r.headers["x-request-id"] == job.id
        assert r.headers["x-idempotent-replay"] == "true"
        record = await c.svc.keys.authenticate(key)
        charged = 5_000_000 - 378_000
        assert await ledger_and_balance(c.svc, record.id) == (charged, charged)
