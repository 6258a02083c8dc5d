"""Every way an engine can fail, through the real worker process (tests/fixtures/failing.py):
each job ends as it should (FAILED and refunded, or COMPLETED), with a message that says what
happened, and the pool runs the next job.

The limits are the runner's hard ends, set short here: a run time limit, a stall watchdog (no
progress), a heartbeat watchdog (a frozen process), a memory limit and a cancel grace period.
"""

from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass
from pathlib import Path

import pytest

from kinema.runners.base import RunnerLost
from kinema.runners.local import LocalRunner, RunLimits
from tests.conftest import (
    app_context,
    ledger_and_balance,
    make_settings,
    png,
    wait_status,
    worker_config,
)

pytestmark = pytest.mark.integration

PLUGINS = ["tests.fixtures.engines", "tests.fixtures.failing"]
B64 = base64.b64encode(png()).decode()
VIDEO_BODY = {"start_image_url": B64, "prompt": "x", "duration": "3"}
LIMITS = RunLimits(
    run_timeout_s=30.0,
    run_timeout_overrides={"fail-run-forever": 2.0},
    stall_timeout_s=2.0,
    cancel_grace_s=1.0,
    heartbeat_timeout_s=2.0,
    max_rss_mb=800.0,
)


@dataclass(frozen=True)
class Case:
    way: str
    status: str
    error: str = ""
    """Part of the job's error message."""
    restarted: bool = False
    """The worker was killed (or died) and restarted."""
    cancel: bool = False
    """The test cancels the job once it runs."""


CASES = [
    Case("raise-on-run", "FAILED", "generation failed: RuntimeError: the model raised"),
    Case("exit-mid-run", "FAILED", "the generation worker was lost 2 times", restarted=True),
    Case("segfault", "FAILED", "the generation worker was lost 2 times", restarted=True),
    Case("hang-without-progress", "FAILED", "the run stalled (no progress for 2 s)", True),
    Case("hang-after-progress", "FAILED", "the run stalled (no progress for 2 s)", True),
    Case("freeze", "FAILED", "the worker stopped answering (no heartbeat for 2 s)", True),
    Case("run-forever", "FAILED", "the run exceeded its time limit (2 s)", restarted=True),
    Case("ignore-cancel", "FAILED", "the engine did not stop within 1 s", True, cancel=True),
    Case("wrong-shape", "FAILED", "engine frames must come in [t, 36, 64, 3] chunks"),
    Case("decode-raises", "FAILED", "RuntimeError: CUDA out of memory in the VAE decode"),
    Case("nan-audio", "FAILED", "the engine produced audio with NaN"),
    Case("leak-memory", "FAILED", "over its limit of 800 MB", restarted=True),
    Case("print-to-stdout", "COMPLETED"),
]


async def _runner(tmp_path: Path, video: str) -> LocalRunner:
    config = worker_config([video, "static-image"], tmp_path / "models", heartbeat_s=0.2)
    config = config.model_copy(update={"plugins": tuple(PLUGINS)})
    runner = LocalRunner.single(config, limits=LIMITS)
    await runner.start()
    return runner


@pytest.mark.parametrize("case", CASES, ids=[case.way for case in CASES])
async def test_each_failure_ends_the_job_as_it_should_and_the_pool_recovers(
    tmp_path: Path, case: Case
) -> None:
    preset = f"fail-{case.way}"
    runner = await _runner(tmp_path, preset)
    settings = make_settings(
        tmp_path,
        engines={"preset": "custom", "video_preset": preset, "image_preset": "static-image"},
        jobs={"max_attempts": 2},
    )
    settings.engines.plugins = PLUGINS
    try:
        async with app_context(settings, runner) as c:
            key = await c.key(credits=5)
            h = {"x-api-key": key}
            r = await c.client.post("/v2/kling-3-standard-image2video", json=VIDEO_BODY, headers=h)
            assert r.status_code == 200, r.text
            rid = r.json()["request_id"]
            if case.cancel:
                await _until_running(c.client, key, rid)
                r = await c.client.post(f"/v2/requests/{rid}/cancel", headers=h)
                assert r.status_code == 200, r.text
            r = await wait_status(c.client, key, rid, case.status, timeout=60)
            body = r.json()
            if case.status == "FAILED":
                assert r.status_code == 422
                assert case.error in body["error"], body["error"]
                expected_balance = 5_000_000
            else:
                expected_balance = 5_000_000 - 378_000  # 3 s with audio
            key_id = (await c.svc.keys.authenticate(key)).id
            assert await ledger_and_balance(c.svc, key_id) == (expected_balance,) * 2
            assert (runner.workers[0].restarts > 0) == case.restarted
            # The pool runs the next job (on the same worker, restarted if it had to be).
            image = {"image_url": B64, "prompt": "next"}
            r = await c.client.post("/v1/kling-3-image2image", json=image, headers=h)
            assert r.status_code == 200, r.text
            assert r.headers["content-type"] == "image/png"
    finally:
        await runner.close()


async def test_an_engine_that_raises_on_load_stops_start_up_with_its_message(
    tmp_path: Path,
) -> None:
    with pytest.raises(RunnerLost, match="the weights are corrupt"):
        await _runner(tmp_path, "fail-raise-on-load")


async def _until_running(client: object, key: str, rid: str) -> None:
    import httpx

    assert isinstance(client, httpx.AsyncClient)
    for _ in range(400):
        r = await client.get(f"/v2/requests/{rid}/status", headers={"x-api-key": key})
        if r.json().get("status") == "PROCESSING" and (r.json().get("progress") or 0) > 0:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"the job never ran: {r.json()}")
