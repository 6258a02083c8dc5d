"""A stop that interrupts runs: queued work goes back to the queue at once (the next start runs it
without waiting for a lease), a sync job handed to this process fails and is refunded. Each app
starts its own worker process, as a restarted server does."""

from __future__ import annotations

import asyncio
import base64
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, select

from kinema.jobs import repository as repo
from kinema.jobs.models import Job, Status
from kinema.jobs.service import CANCELLED, SHUT_DOWN
from kinema.store.tables import jobs
from tests.conftest import Ctx, app_context, make_settings, png, start_runner, wait_status

pytestmark = pytest.mark.integration

VIDEO = "kling-3-standard-image2video"
BODY = {"start_image_url": base64.b64encode(png()).decode(), "prompt": "x", "duration": "3"}
LONG = {**BODY, "prompt": "steps=600"}  # runs until it is stopped


def settings(tmp_path: Path, **jobs: Any) -> Any:
    # A lease far longer than the test: only a hand-back can make the job run again in time.
    return make_settings(
        tmp_path,
        engines={
            "preset": "custom",
            "video_preset": "test-slow-video",
            "image_preset": "test-echo-image",
        },
        jobs={"lease_s": 600, "shutdown_grace_s": 0.2, **jobs},
    )


async def _running_then_stopped(
    c: Ctx, body: dict[str, Any], *, cancel_first: bool = False
) -> tuple[str, str, float]:
    """A key with 10 credits submits ``body`` (async), and once it runs the dispatcher stops
    (with a cancel asked for just before, if ``cancel_first``): the key, the request id, and
    the balance after its reservation."""
    key = await c.key(credits=10)
    submitted = await c.client.post(f"/v2/{VIDEO}", json=body, headers={"x-api-key": key})
    rid = submitted.json()["request_id"]
    reserved = await _credits(c, key)
    await wait_status(c.client, key, rid, "PROCESSING")
    if cancel_first:
        await c.svc.db.write(lambda conn: repo.request_cancel(conn, rid))
    assert c.svc.dispatcher is not None
    await c.svc.dispatcher.stop()
    return key, rid, reserved


async def _stored(c: Ctx, job_id: str) -> Job:
    job = await c.svc.db.read(lambda conn: repo.get(conn, job_id))
    assert job is not None
    return job


async def _credits(c: Ctx, key: str) -> float:
    r = await c.client.get("/v1/get-user-credits", headers={"x-api-key": key})
    return float(r.json()["credits"])


async def test_an_interrupted_async_job_is_queued_again_and_runs_at_the_next_start(
    tmp_path: Path,
) -> None:
    async with app_context(settings(tmp_path), None) as c:
        key, rid, reserved = await _running_then_stopped(c, LONG)
        h = {"x-api-key": key}
        job = await _stored(c, rid)
        assert job.status is Status.QUEUED and job.lease_owner is None
        assert job.attempts == 0  # a stop is not one of its attempts
        assert not (c.svc.settings.storage_path / "outputs" / rid).exists()
        assert await _credits(c, key) == reserved  # its price stays reserved
    async with app_context(settings(tmp_path), None) as c2:
        # It ran until stopped; the next start runs it again at once (20 steps of 0.1 s
        # would do, but it asks for 600): stop it for good with a cancel once it runs.
        await wait_status(c2.client, key, rid, "PROCESSING", timeout=10)
        assert (await _stored(c2, rid)).attempts == 1
        await c2.client.post(f"/v2/requests/{rid}/cancel", headers=h)
        await wait_status(c2.client, key, rid, "FAILED")
        assert await _credits(c2, key) == pytest.approx(10)


async def test_a_short_async_job_interrupted_by_a_stop_completes_after_restart_charged_once(
    tmp_path: Path,
) -> None:
    async with app_context(settings(tmp_path), None) as c:
        key, rid, charged = await _running_then_stopped(c, BODY)  # 0.2 s of grace for 2 s
        assert (await _stored(c, rid)).status is Status.QUEUED
    async with app_context(settings(tmp_path), None) as c2:
        await wait_status(c2.client, key, rid, "COMPLETED", timeout=15)
        job = await _stored(c2, rid)
        assert job.attempts == 1
        assert await _credits(c2, key) == charged < 10


async def test_a_stop_waits_for_the_worker_to_let_go_of_the_runs_it_stops(tmp_path: Path) -> None:
    # One worker process for both apps: the stop must not return before the worker answered
    # for the run it stopped, or that late answer would end the job's next run.
    runner = await start_runner(["test-slow-video", "test-echo-image"], tmp_path / "models")
    try:
        async with app_context(settings(tmp_path), runner) as c:
            key = await c.key(credits=10)
            h = {"x-api-key": key}
            rid = (await c.client.post(f"/v2/{VIDEO}", json=BODY, headers=h)).json()["request_id"]
            await wait_status(c.client, key, rid, "PROCESSING")
            assert c.svc.dispatcher is not None
            await c.svc.dispatcher.stop()
            assert (await _stored(c, rid)).status is Status.QUEUED
        async with app_context(settings(tmp_path), runner) as c2:
            await wait_status(c2.client, key, rid, "COMPLETED", timeout=15)
    finally:
        await runner.close()


async def test_a_job_cancelled_as_the_stop_comes_is_not_queued_again(tmp_path: Path) -> None:
    async with app_context(settings(tmp_path), None) as c:
        # Asked for, not yet acted on (the lease renewal passes it to the worker each second).
        key, rid, _ = await _running_then_stopped(c, LONG, cancel_first=True)
        job = await _stored(c, rid)
        assert job.status is Status.FAILED and job.error == CANCELLED
        assert await _credits(c, key) == 10


async def test_a_cancel_left_by_a_dead_dispatcher_ends_the_job_once_its_lease_expires(
    tmp_path: Path,
) -> None:
    """Only a lease holder acts on a cancel; no claim takes a job a cancel was asked for. So a
    cancelled job whose dispatcher died is failed and refunded when its lease expires (it stayed
    PROCESSING forever, its price reserved)."""
    async with app_context(settings(tmp_path), None) as c:
        key = await c.key(credits=10)
        h = {"x-api-key": key}
        assert c.svc.dispatcher is not None
        await c.svc.dispatcher.stop()  # claims nothing from now on
        rid = (await c.client.post(f"/v2/{VIDEO}", json=BODY, headers=h)).json()["request_id"]
        now = time.time()
        claimed = await c.svc.db.write(
            lambda conn: repo.claim(
                conn, owner="dead-dispatcher", limit=1, now=now, lease_s=0.3, max_attempts=3
            )
        )
        assert [job.id for job in claimed] == [rid]
        r = await c.client.post(f"/v2/requests/{rid}/cancel", headers=h)
        assert r.json()["status"] == "PROCESSING"  # flagged for its (dead) runner
    await asyncio.sleep(0.4)
    async with app_context(settings(tmp_path, poll_interval_s=0.05), None) as c2:
        r = await wait_status(c2.client, key, rid, "FAILED", timeout=10)
        assert r.json()["error"] == CANCELLED
        assert await _credits(c2, key) == 10


async def test_a_sync_job_cut_off_by_a_stop_fails_and_is_refunded(tmp_path: Path) -> None:
    async with app_context(settings(tmp_path), None) as c:
        key = await c.key(credits=10)
        call = asyncio.create_task(
            c.client.post(f"/v1/{VIDEO}", json=LONG, headers={"x-api-key": key})
        )
        deadline = asyncio.get_running_loop().time() + 10
        running: list[str] = []
        while not running and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
            running = await c.svc.db.read(_processing)
        assert running, "the sync job never started"
        assert c.svc.dispatcher is not None
        await c.svc.dispatcher.stop()
        r = await call
        assert r.status_code == 502 and r.json() == {"error": SHUT_DOWN}
        job = await _stored(c, running[0])
        assert job.status is Status.FAILED and job.error == SHUT_DOWN
        assert await _credits(c, key) == pytest.approx(10)


def _processing(conn: Connection) -> list[str]:
    return [row.id for row in conn.execute(select(jobs.c.id).where(jobs.c.status == "PROCESSING"))]
