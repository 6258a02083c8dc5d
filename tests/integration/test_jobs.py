"""The job state machine behind both paths: progress, cancel, failures refund, leases expire and
jobs are retried, a lost worker is survived, idempotent submits, restarts keep async requests."""

from __future__ import annotations

import asyncio
import base64
import io
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from sqlalchemy import select

from kinema.api.endpoints import ENDPOINTS
from kinema.errors import StorageUnavailable
from kinema.jobs import dispatcher as dispatcher_module
from kinema.jobs import handoff as handoff_module
from kinema.jobs import repository as repo
from kinema.jobs.dispatcher import Dispatcher
from kinema.runners.base import RunTask
from kinema.runners.local import LocalRunner
from kinema.store.tables import credit_ledger, jobs
from tests.conftest import (
    Ctx,
    app_context,
    ledger_and_balance,
    make_settings,
    png,
    runner_fixture,
    start_runner,
    wait_status,
)
from tests.fixtures.specs import image_spec

pytestmark = pytest.mark.integration

B64 = base64.b64encode(png()).decode()
IMAGE_SLUG = "kling-3-image2image"
VIDEO_BODY = {"start_image_url": B64, "prompt": "x", "duration": "3"}


def video_settings(tmp_path: Path, preset: str, **over: Any) -> Any:
    return make_settings(
        tmp_path,
        engines={"preset": "custom", "video_preset": preset, "image_preset": "test-echo-image"},
        **over,
    )


slow_runner = runner_fixture("test-slow-video", "test-echo-image")


async def _outputs_left(c: Ctx, ids: list[str] | None = None) -> list[str]:
    """Which of these jobs (default: every job of this app) have output folders in the storage
    (shared by the tests): a failed job leaves none."""
    if ids is None:
        ids = [row.id for row in await _job_rows(c)]
    outputs = c.svc.settings.storage_path / "outputs"
    return sorted(job_id for job_id in ids if (outputs / job_id).exists())


async def _balance(c: Ctx, key: str) -> float:
    r = await c.client.get("/v1/get-user-credits", headers={"x-api-key": key})
    return float(r.json()["credits"])


async def test_progress_then_completed(tmp_path: Path, slow_runner: LocalRunner) -> None:
    async with app_context(video_settings(tmp_path, "test-slow-video"), slow_runner) as c:
        key = await c.key()
        h = {"x-api-key": key}
        rid = (
            await c.client.post("/v2/kling-3-standard-image2video", json=VIDEO_BODY, headers=h)
        ).json()["request_id"]
        seen: set[float] = set()
        phases: list[tuple[str, float]] = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            s = (await c.client.get(f"/v2/requests/{rid}/status", headers=h)).json()
            if s["status"] == "PROCESSING" and "progress" in s:
                seen.add(s["progress"])
                if "phase" in s:
                    phases.append((s["phase"], s["phase_progress"]))
                    assert 0 <= s["phase_progress"] <= 1
            if s["status"] == "COMPLETED":
                break
            await asyncio.sleep(0.1)
        assert s["status"] == "COMPLETED"
        assert "phase" not in s and "phase_progress" not in s  # only while it runs
        assert any(0 < p < 1 for p in seen), seen
        assert max(seen) < 1.0  # 1 only once the output is stored: COMPLETED
        # The slow engine's 2 s of steps are its denoising: seen moving, within its share.
        denoising = [within for phase, within in phases if phase == "denoising"]
        assert len(set(denoising)) >= 2, phases


async def test_queue_position_and_cancel_queued_refunds(
    tmp_path: Path, slow_runner: LocalRunner
) -> None:
    async with app_context(video_settings(tmp_path, "test-slow-video"), slow_runner) as c:
        key = await c.key(credits=10)
        h = {"x-api-key": key}
        long_job = {**VIDEO_BODY, "prompt": "steps=600"}  # runs until it is cancelled
        ids = [
            (await c.client.post("/v2/kling-3-standard-image2video", json=body, headers=h)).json()[
                "request_id"
            ]
            for body in (long_job, VIDEO_BODY, VIDEO_BODY)
        ]
        last = (await c.client.get(f"/v2/requests/{ids[2]}/status", headers=h)).json()
        assert last["status"] == "QUEUED" and last["queue_position"] >= 1
        r = await c.client.post(f"/v2/requests/{ids[2]}/cancel", headers=h)
        assert r.status_code == 200 and r.json()["status"] == "FAILED"
        r = await c.client.get(f"/v2/requests/{ids[2]}", headers=h)
        assert r.status_code == 422 and r.json()["status"] == "FAILED"
        assert r.json()["metrics"]["cost"] == 0
        # Cancel the running one: it stops at a step boundary and is refunded.
        await wait_status(c.client, key, ids[0], "PROCESSING")
        await c.client.post(f"/v2/requests/{ids[0]}/cancel", headers=h)
        r = await wait_status(c.client, key, ids[0], "FAILED")
        assert r.status_code == 422 and "cancel" in r.json()["error"]
        await wait_status(c.client, key, ids[1], "COMPLETED")
        assert await _balance(c, key) == pytest.approx(10 - 3 * 0.126)  # only ids[1] is paid


async def test_failed_generation_is_422_and_refunded(tmp_path: Path) -> None:
    runner = await start_runner(["test-failing-video", "test-echo-image"], tmp_path / "m")
    try:
        async with app_context(video_settings(tmp_path, "test-failing-video"), runner) as c:
            key = await c.key(credits=5)
            h = {"x-api-key": key}
            rid = (
                await c.client.post("/v2/kling-3-standard-image2video", json=VIDEO_BODY, headers=h)
            ).json()["request_id"]
            r = await wait_status(c.client, key, rid, "FAILED")
            assert r.status_code == 422
            body = r.json()
            assert body["status"] == "FAILED" and "out of memory" in body["error"]
            assert set(body["metrics"]) >= {
                "inference_time",
                "queue_time",
                "total_time",
                "cost",
                "remaining_credits",
            }
            assert await _balance(c, key) == 5
            # Sync path: the same failure answers 500 with the message, refunded as well.
            r = await c.client.post("/v1/kling-3-standard-image2video", json=VIDEO_BODY, headers=h)
            assert r.status_code == 500 and "out of memory" in r.json()["error"]
            assert await _balance(c, key) == 5
            key_id = (await c.svc.keys.authenticate(key)).id
            ledger, balance = await ledger_and_balance(c.svc, key_id)
            assert ledger == balance == 5_000_000
            assert await _outputs_left(c) == []
    finally:
        await runner.close()


async def test_worker_crash_is_retried_then_failed_and_refunded(tmp_path: Path) -> None:
    runner = await start_runner(["test-crashing-video", "test-echo-image"], tmp_path / "m")
    settings = video_settings(
        tmp_path, "test-crashing-video", jobs={"max_attempts": 2, "poll_interval_s": 0.05}
    )
    try:
        async with app_context(settings, runner) as c:
            key = await c.key(credits=5)
            h = {"x-api-key": key}
            rid = (
                await c.client.post("/v2/kling-3-standard-image2video", json=VIDEO_BODY, headers=h)
            ).json()["request_id"]
            r = await wait_status(c.client, key, rid, "FAILED")
            assert "worker was lost 2 times" in r.json()["error"]
            job = await c.svc.jobs.get(rid)
            assert job is not None and job.attempts == 2
            assert await _balance(c, key) == 5
            rows = await c.svc.db.read(
                lambda conn: conn.execute(
                    select(credit_ledger.c.kind).where(credit_ledger.c.job_id == rid)
                ).all()
            )
            assert sorted(r.kind for r in rows) == ["refund", "reserve"]
            assert await _outputs_left(c) == []
    finally:
        await runner.close()


@pytest.mark.parametrize("inline_bytes", [None, 0], ids=["in-memory", "in-storage"])
async def test_handed_off_sync_job_keeps_its_inputs_through_a_lost_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, inline_bytes: int | None
) -> None:
    """A sync job handed straight to a local slot holds its small inputs only in memory (sent
    inside the run), larger ones in the storage; when its worker dies the small ones move to
    the storage too, the retry (from the queue) finds them there, and the waiting client gets
    its video."""
    if inline_bytes is not None:
        monkeypatch.setattr(handoff_module, "HANDOFF_INLINE_BYTES", inline_bytes)
    runner = await start_runner(["test-crash-once-video", "test-echo-image"], tmp_path / "m")
    settings = video_settings(
        tmp_path, "test-crash-once-video", jobs={"max_attempts": 2, "poll_interval_s": 0.05}
    )
    try:
        async with app_context(settings, runner) as c:
            key = await c.key(credits=5)
            body = {**VIDEO_BODY, "prompt": f"crash once {tmp_path.name}"}
            r = await c.client.post(
                "/v1/kling-3-standard-image2video", json=body, headers={"x-api-key": key}
            )
            assert r.status_code == 200, r.text
            assert r.headers["content-type"] == "video/mp4"
            # The answer comes first, the COMPLETED row one loop turn later.
            for _ in range(100):
                rows = await c.svc.db.read(lambda conn: conn.execute(select(jobs)).all())
                if rows[0].status == "COMPLETED":
                    break
                await asyncio.sleep(0.01)
            assert len(rows) == 1 and rows[0].attempts == 2 and rows[0].status == "COMPLETED"
            # Settled: the inputs the retry needed leave the storage again (just after the answer).
            inputs = settings.storage_path / "inputs" / rows[0].id
            for _ in range(100):
                if not inputs.exists():
                    break
                await asyncio.sleep(0.02)
            assert not inputs.exists()
    finally:
        await runner.close()


async def test_a_sync_hand_off_never_overtakes_a_queued_job(
    tmp_path: Path, static_runner: LocalRunner
) -> None:
    """A free slot goes straight to a sync request only when no job waits in the queue; a
    waiting job wakes the dispatcher instead."""
    async with app_context(make_settings(tmp_path), static_runner) as c:
        key = await c.key()
        assert c.svc.dispatcher is not None
        await c.svc.dispatcher.stop()  # this app's dispatcher claims nothing from now on
        dispatcher = Dispatcher(
            c.svc.db,
            c.svc.jobs,
            static_runner,
            c.svc.storage,
            c.svc.settings.jobs,
            models={slug: endpoint.task.value for slug, endpoint in ENDPOINTS.items()},
        )
        body = {"image_url": B64, "prompt": "x"}
        rid = (
            await c.client.post("/v2/kling-3-image2image", json=body, headers={"x-api-key": key})
        ).json()["request_id"]
        c.svc.jobs.notifier.work_available.clear()

        assert await dispatcher.offer_slot(IMAGE_SLUG) is None
        assert c.svc.jobs.notifier.work_available.is_set()

        queued = await c.svc.jobs.get(rid)
        assert queued is not None
        await c.svc.jobs.cancel(queued)
        handoff = await dispatcher.offer_slot(IMAGE_SLUG)
        assert handoff is not None
        assert await dispatcher.offer_slot(IMAGE_SLUG) is None  # the only slot is held
        await dispatcher.withdraw(handoff)
        assert await dispatcher.offer_slot(IMAGE_SLUG) is not None


async def test_a_cancel_that_arrives_while_the_job_finishes_wins_and_refunds(
    tmp_path: Path, static_runner: LocalRunner
) -> None:
    """A client told "cancelled" (a sync request that timed out, or a cancel call) is never
    charged, even when the generation finishes after the cancel was asked for."""
    async with app_context(make_settings(tmp_path), static_runner) as c:
        key = await c.key(credits=1)
        assert c.svc.dispatcher is not None
        await c.svc.dispatcher.stop()
        body = {"image_url": B64, "prompt": "x"}
        rid = (
            await c.client.post("/v2/kling-3-image2image", json=body, headers={"x-api-key": key})
        ).json()["request_id"]
        now = time.time()
        (job,) = await c.svc.db.write(
            lambda conn: repo.claim(
                conn, owner="worker-a", limit=1, now=now, lease_s=30, max_attempts=3
            )
        )
        cancelled = await c.svc.jobs.cancel(job)
        assert cancelled.status.value == "PROCESSING" and cancelled.cancel_requested

        final = await c.svc.jobs.settle_completed(
            job,
            "worker-a",
            output_key=f"outputs/{rid}/output.png",
            output_content_type="image/png",
            output_metadata={},
            inference_time=0.1,
        )
        assert final is not None and final.status.value == "FAILED"
        assert final.error == "cancelled by the client" and final.output_key is None
        assert await _balance(c, key) == 1
        record = await c.svc.keys.authenticate(key)
        ledger, balance = await ledger_and_balance(c.svc, record.id)
        assert ledger == balance == 1_000_000
        # Settling again changes nothing (the refund is paid once).
        again = await c.svc.jobs.settle_completed(job, "worker-a")
        assert again is None
        assert (await ledger_and_balance(c.svc, record.id)) == (1_000_000, 1_000_000)


async def test_sync_timeout_is_504_then_cancelled_and_refunded(
    tmp_path: Path, slow_runner: LocalRunner
) -> None:
    settings = video_settings(tmp_path, "test-slow-video", server={"sync_timeout_s": 0.3})
    async with app_context(settings, slow_runner) as c:
        key = await c.key(credits=5)
        r = await c.client.post(
            "/v1/kling-3-standard-image2video", json=VIDEO_BODY, headers={"x-api-key": key}
        )
        assert r.status_code == 504
        assert "did not finish within 0.3 s" in r.json()["error"]
        rid = r.headers["x-request-id"]
        # The worker stops at its next step; the job ends FAILED and the price comes back.
        for _ in range(200):
            job = await c.svc.jobs.get(rid)
            if job is not None and job.status.final:
                break
            await asyncio.sleep(0.02)
        assert job is not None and job.status.value == "FAILED"
        assert await _balance(c, key) == 5
        record = await c.svc.keys.authenticate(key)
        ledger, balance = await ledger_and_balance(c.svc, record.id)
        assert ledger == balance == 5_000_000


async def test_concurrent_sync_and_async_requests_all_complete_and_are_charged_once(
    tmp_path: Path, static_runner: LocalRunner
) -> None:
    """Sync requests racing async ones for one worker: some are handed straight to the slot,
    the rest queue; every one completes, in the books exactly once."""
    async with app_context(make_settings(tmp_path), static_runner) as c:
        key = await c.key(credits=10)
        h = {"x-api-key": key}
        body = {"image_url": B64, "prompt": "x"}

        async def sync() -> int:
            r = await c.client.post("/v1/kling-3-image2image", json=body, headers=h)
            assert r.headers["content-type"] == "image/png", r.text
            return r.status_code

        async def submit() -> str:
            r = await c.client.post("/v2/kling-3-image2image", json=body, headers=h)
            return str(r.json()["request_id"])

        results = await asyncio.gather(*(sync() if n % 2 else submit() for n in range(12)))
        assert [r for r in results if isinstance(r, int)] == [200] * 6
        for rid in (r for r in results if isinstance(r, str)):
            await wait_status(c.client, key, rid, "COMPLETED")
        for _ in range(100):  # sync rows settle just after their answers
            rows = await c.svc.db.read(lambda conn: conn.execute(select(jobs.c.status)).all())
            if all(row.status == "COMPLETED" for row in rows):
                break
            await asyncio.sleep(0.02)
        assert len(rows) == 12 and all(row.status == "COMPLETED" for row in rows)
        record = await c.svc.keys.authenticate(key)
        ledger, balance = await ledger_and_balance(c.svc, record.id)
        assert ledger == balance == 10_000_000 - 12 * 35_000


async def test_a_sync_answer_is_final_at_once_for_status_reads(
    ctx: Ctx, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The settle of a sync job runs a moment after its answer; a status or result read in that
    moment already sees COMPLETED (from this process's announcement), then the row does."""
    monkeypatch.setattr(dispatcher_module, "SETTLE_AFTER_ANSWER_S", 0.3)  # a moment made long
    key = await ctx.key(credits=1)
    h = {"x-api-key": key}
    r = await ctx.client.post(
        "/v1/kling-3-image2image", json={"image_url": B64, "prompt": "x"}, headers=h
    )
    assert r.status_code == 200
    rid = r.headers["x-request-id"]
    stored = await ctx.svc.db.read(lambda conn: repo.get(conn, rid))
    assert stored is not None and stored.status.value == "PROCESSING"  # not settled yet
    status = await ctx.client.get(f"/v2/requests/{rid}/status", headers=h)
    assert status.json()["status"] == "COMPLETED"
    result = (await ctx.client.get(f"/v2/requests/{rid}", headers=h)).json()
    assert result["status"] == "COMPLETED" and result["output"]
    assert (await ctx.client.get(result["output"])).content == r.content
    await wait_status(ctx.client, key, rid, "COMPLETED")
    for _ in range(100):
        stored = await ctx.svc.db.read(lambda conn: repo.get(conn, rid))
        if stored is not None and stored.status.value == "COMPLETED":
            break
        await asyncio.sleep(0.02)
    assert stored is not None and stored.status.value == "COMPLETED"
    record = await ctx.svc.keys.authenticate(key)
    assert await ledger_and_balance(ctx.svc, record.id) == (965_000, 965_000)


@pytest.fixture
def started(static_runner: LocalRunner, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The ids of the jobs the static runner is given during the test."""
    ids: list[str] = []
    real_run = static_runner.run

    async def counting_run(task: RunTask, on_progress: Any, on_alive: Any) -> Any:
        ids.append(task.job_id)
        return await real_run(task, on_progress, on_alive)

    monkeypatch.setattr(static_runner, "run", counting_run)
    return ids


def _noisy_png() -> bytes:
    buf = io.BytesIO()
    Image.frombytes("RGB", (64, 48), bytes(range(256)) * 36).save(buf, format="PNG")
    return buf.getvalue()


async def _until_idle(c: Ctx) -> None:
    for _ in range(200):
        if c.svc.dispatcher is not None and c.svc.dispatcher.idle:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the dispatcher is still busy")


async def _job_rows(c: Ctx) -> list[Any]:
    return list(await c.svc.db.read(lambda conn: conn.execute(select(jobs)).all()))


async def test_a_sync_job_refused_after_reaching_its_worker_leaves_no_trace(
    ctx: Ctx, started: list[str]
) -> None:
    """A sync job goes to its worker once its body and input headers are checked; the full input
    check and the credit reservation follow while it runs. When either refuses the request, the
    client gets its 400/406 and the run leaves nothing: no job row, no charge, no output. A key
    known to be short of credits no longer makes the worker start at all."""
    image = "/v1/kling-3-image2image"
    poor = await ctx.key(credits=0.03)  # an image costs 0.035
    for _ in range(2):
        r = await ctx.client.post(
            image, json={"image_url": B64, "prompt": "x"}, headers={"x-api-key": poor}
        )
        assert r.status_code == 406 and "not enough credits" in r.json()["error"]
        assert len(started) == 1  # the first reached the worker; the second (known short) not
        await _until_idle(ctx)
    rich = await ctx.key(credits=1)
    noisy = _noisy_png()
    truncated = base64.b64encode(noisy[: len(noisy) * 2 // 3]).decode()
    r = await ctx.client.post(
        image, json={"image_url": truncated, "prompt": "x"}, headers={"x-api-key": rich}
    )
    assert r.status_code == 400 and r.json()["error"].startswith("image_url: corrupt")
    assert len(started) == 2  # its header was fine: it reached the worker
    await _until_idle(ctx)  # the withdrawn run ends and gives its slot back
    assert await _job_rows(ctx) == []
    assert await _outputs_left(ctx, started) == []
    assert await _balance(ctx, poor) == 0.03 and await _balance(ctx, rich) == 1
    for key, credits in ((poor, 30_000), (rich, 1_000_000)):
        record = await ctx.svc.keys.authenticate(key)
        assert await ledger_and_balance(ctx.svc, record.id) == (credits, credits)

    # Credits added (by the operator's CLI, say): the key's next sync request is served.
    await ctx.svc.keys.add_credits(poor, 1)
    r = await ctx.client.post(
        image, json={"image_url": B64, "prompt": "x"}, headers={"x-api-key": poor}
    )
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    r = await ctx.client.post(
        image,
        json={"image_url": base64.b64encode(noisy).decode(), "prompt": "x"},
        headers={"x-api-key": rich},
    )
    assert r.status_code == 200
    assert len(await _job_rows(ctx)) == 2  # the two served requests, and only they


async def test_sync_requests_are_rate_limited_before_their_run_and_counted_once(
    ctx: Ctx, started: list[str]
) -> None:
    """A sync request is checked against its key's rate limit before anything runs and counted
    once its job is on its way to a worker; a request that fails before that counts too."""
    image = "/v1/kling-3-image2image"
    h = {"x-api-key": await ctx.key(credits=1, rate_limit="2/minute")}
    bad = await ctx.client.post(image, json={"image_url": B64, "prompt": ""}, headers=h)
    assert bad.status_code == 400  # counted: one left
    r = await ctx.client.post(image, json={"image_url": B64, "prompt": "x"}, headers=h)
    assert r.status_code == 200 and r.headers["x-rate-limit-remaining"] == "0"
    await _until_idle(ctx)
    r = await ctx.client.post(image, json={"image_url": B64, "prompt": "x"}, headers=h)
    assert r.status_code == 429 and "rate limit" in r.json()["error"]
    assert len(started) == 1  # the refused request never reached a worker
    assert len(await _job_rows(ctx)) == 1


async def test_two_sync_requests_racing_for_the_last_place_in_the_window(ctx: Ctx) -> None:
    """Both pass the check; the count admits one. The other is refused (429) and leaves no
    trace, even when its job had already gone to a worker."""
    key = await ctx.key(credits=1, rate_limit="1/minute")
    body = {"image_url": B64, "prompt": "x"}

    async def call() -> int:
        r = await ctx.client.post("/v1/kling-3-image2image", json=body, headers={"x-api-key": key})
        return r.status_code

    assert sorted(await asyncio.gather(call(), call())) == [200, 429]
    await _until_idle(ctx)
    assert len(await _job_rows(ctx)) == 1
    assert await _balance(ctx, key) == pytest.approx(1 - 0.035)
    assert await _outputs_left(ctx) == [(await _job_rows(ctx))[0].id]


async def test_a_refused_sync_job_stops_its_run(tmp_path: Path, slow_runner: LocalRunner) -> None:
    """A sync video refused after it reached the worker (406 here) is stopped at its next step:
    the slot serves the next request at once, not after the refused run's 100 s."""
    async with app_context(video_settings(tmp_path, "test-slow-video"), slow_runner) as c:
        poor = await c.key(credits=0.1)
        body = {**VIDEO_BODY, "prompt": "steps=1000"}  # 100 s unless stopped
        r = await c.client.post(
            "/v1/kling-3-standard-image2video", json=body, headers={"x-api-key": poor}
        )
        assert r.status_code == 406
        rich = await c.key(credits=5)
        began = time.monotonic()
        r = await c.client.post(
            "/v1/kling-3-standard-image2video",
            json={**VIDEO_BODY, "prompt": "steps=1"},
            headers={"x-api-key": rich},
        )
        assert r.status_code == 200, r.text
        assert time.monotonic() - began < 10
        assert len(await _job_rows(c)) == 1 and await _balance(c, poor) == 0.1


async def test_a_sync_settle_waits_for_the_next_job_to_reach_its_worker(
    ctx: Ctx, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An answered sync job is settled once the next job has gone to a worker (so the settle
    never delays that job), or after SETTLE_AFTER_ANSWER_S without one; a shutdown settles it
    at once."""
    monkeypatch.setattr(dispatcher_module, "SETTLE_AFTER_ANSWER_S", 60.0)
    key = await ctx.key(credits=1)
    h = {"x-api-key": key}

    async def sync_call() -> str:
        r = await ctx.client.post(
            "/v1/kling-3-image2image", json={"image_url": B64, "prompt": "x"}, headers=h
        )
        assert r.status_code == 200
        return r.headers["x-request-id"]

    async def stored(rid: str) -> str:
        job = await ctx.svc.db.read(lambda conn: repo.get(conn, rid))
        assert job is not None
        return job.status.value

    async def completes(rid: str) -> bool:
        for _ in range(100):
            if await stored(rid) == "COMPLETED":
                return True
            await asyncio.sleep(0.02)
        return False

    first = await sync_call()
    await asyncio.sleep(0.3)
    assert await stored(first) == "PROCESSING"  # answered; no next job yet
    second = await sync_call()
    assert await completes(first)
    assert await stored(second) == "PROCESSING"
    assert ctx.svc.dispatcher is not None
    await ctx.svc.dispatcher.stop()
    assert await stored(second) == "COMPLETED"


async def test_expired_lease_is_retried_by_another_dispatcher(
    tmp_path: Path, static_runner: LocalRunner
) -> None:
    """A dispatcher that claimed a job and died: once its lease expires the job runs again."""
    async with app_context(make_settings(tmp_path), static_runner) as c:
        key = await c.key()
        assert c.svc.dispatcher is not None
        await c.svc.dispatcher.stop()  # this app's dispatcher stops claiming
        body = {"image_url": B64, "prompt": "x"}
        rid = (
            await c.client.post("/v2/kling-3-image2image", json=body, headers={"x-api-key": key})
        ).json()["request_id"]
        now = time.time()
        claimed = await c.svc.db.write(
            lambda conn: repo.claim(
                conn, owner="dead-dispatcher", limit=1, now=now, lease_s=0.2, max_attempts=3
            )
        )
        assert [j.id for j in claimed] == [rid]
    # A new process on the same data: the dead lease has expired by now.
    await asyncio.sleep(0.3)
    async with app_context(make_settings(tmp_path), static_runner) as c2:
        r = await wait_status(c2.client, key, rid, "COMPLETED")
        job = await c2.svc.jobs.get(rid)
        assert job is not None and job.attempts == 2
        assert r.json()["metrics"]["cost"] == pytest.approx(0.035)


async def test_async_request_survives_restart(tmp_path: Path, static_runner: LocalRunner) -> None:
    async with app_context(make_settings(tmp_path), static_runner) as c:
        key = await c.key(credits=1)
        assert c.svc.dispatcher is not None
        await c.svc.dispatcher.stop()
        rid = (
            await c.client.post(
                "/v2/kling-3-image2image",
                json={"image_url": B64, "prompt": "x"},
                headers={"x-api-key": key},
            )
        ).json()["request_id"]
    async with app_context(make_settings(tmp_path), static_runner) as c2:
        await wait_status(c2.client, key, rid, "COMPLETED")
        r = await c2.client.get(f"/v1/requests/{rid}", headers={"x-api-key": key})
        assert r.json()["status"] == "COMPLETED" and r.json()["output"].startswith("http")
        assert (await c2.client.get(r.json()["output"])).status_code == 200


async def test_idempotency_key_same_request_no_second_charge(ctx: Ctx) -> None:
    key = await ctx.key(credits=1)
    h = {"x-api-key": key, "Idempotency-Key": "abc-123"}
    body = {"image_url": B64, "prompt": "x"}
    a = (await ctx.client.post("/v2/kling-3-image2image", json=body, headers=h)).json()
    b = (await ctx.client.post("/v2/kling-3-image2image", json=body, headers=h)).json()
    assert a["request_id"] == b["request_id"]
    r = await ctx.client.post("/v2/kling-3-image2image", json={**body, "prompt": "y"}, headers=h)
    assert r.status_code == 409 and "Idempotency-Key" in r.json()["error"]
    await wait_status(ctx.client, key, a["request_id"], "COMPLETED")
    assert await _balance(ctx, key) == pytest.approx(1 - 0.035)


async def test_crash_between_reserve_and_insert_changes_nothing(
    ctx: Ctx, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reservation and job insert are one transaction: if the insert fails, the money stays."""
    from kinema.jobs.models import NewJob

    key = await ctx.key(credits=1)
    record = await ctx.svc.keys.authenticate(key)
    bad = NewJob(
        id="job-that-never-commits",
        key_id=record.id,
        model="kling-3-image2image",
        spec=image_spec(),
        price_micros=35_000,
    )
    original = repo.insert_job

    def exploding(*args: Any, **kwargs: Any) -> None:
        original(*args, **kwargs)
        raise RuntimeError("crash after insert, before commit")

    monkeypatch.setattr(repo, "insert_job", exploding)
    with pytest.raises(RuntimeError):
        await ctx.svc.jobs.submit(bad)
    assert await _balance(ctx, key) == 1
    assert await ctx.svc.jobs.get(bad.id) is None
    assert await ledger_and_balance(ctx.svc, record.id) == (1_000_000, 1_000_000)


async def test_engine_that_cannot_load_stops_startup_with_its_message(tmp_path: Path) -> None:
    from kinema.runners.base import RunnerLost

    settings = video_settings(tmp_path, "test-broken-video")
    with pytest.raises(RunnerLost, match="weights not found"):
        async with app_context(settings, None):
            pass


def test_unknown_preset_stops_startup(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from kinema.api.app import create_app

    settings = video_settings(tmp_path, "no-such-preset")
    with (
        pytest.raises(KeyError, match="unknown engine preset 'no-such-preset'"),
        TestClient(create_app(settings)),
    ):
        pass


async def test_production_preset_without_weights_stops_startup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kinema.runners.base import RunnerLost

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    settings = make_settings(tmp_path, engines={"preset": "production", "plugins": []})
    with pytest.raises(RunnerLost) as err:
        async with app_context(settings, None):
            pass
    # Every missing weight at once: the video and image engines' and the speech engine's.
    assert "hf download Lightricks/LTX-2.5-Diffusers" in str(err.value)
    assert "hf download black-forest-labs/FLUX.2-klein-4B" in str(err.value)
    assert "hf download openbmb/VoxCPM2" in str(err.value)


async def test_a_storage_down_at_clean_up_leaves_the_job_settled(
    ctx: Ctx, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Deleting a settled job's inputs fails (the storage went down after the output was
    stored): the job stays COMPLETED and charged once, the leftovers are retention's."""
    key = await ctx.key(credits=10)
    h = {"x-api-key": key}

    async def down(prefix: str) -> None:
        raise StorageUnavailable(f"the storage is unavailable: {prefix}")

    monkeypatch.setattr(ctx.svc.storage, "delete_prefix", down)
    body = {"image_url": B64, "prompt": "x"}
    rid = (await ctx.client.post(f"/v2/{IMAGE_SLUG}", json=body, headers=h)).json()["request_id"]
    await wait_status(ctx.client, key, rid, "COMPLETED")
    r = await ctx.client.get(f"/v2/requests/{rid}", headers=h)
    assert r.status_code == 200 and r.json()["status"] == "COMPLETED"
    deadline = time.monotonic() + 10
    while not any("retention will" in rec.getMessage() for rec in caplog.records):
        assert time.monotonic() < deadline, "the failed clean-up was not reported"
        await asyncio.sleep(0.05)
    key_id = (await ctx.svc.keys.authenticate(key)).id
    ledger, balance = await ledger_and_balance(ctx.svc, key_id)
    assert ledger == balance
