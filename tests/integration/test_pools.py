"""Worker pools: one per task, separate queues (an image edit with its own worker never waits
for a long video), each worker pinned to its GPUs (here a fake two-GPU inventory: the workers
report the CUDA_VISIBLE_DEVICES they were given)."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import pytest

import tests.fixtures.engines  # noqa: F401 - registers the fixture presets in this process
from kinema.runners.factory import open_runner
from kinema.runners.local import LocalRunner
from tests.conftest import PLUGINS, app_context, make_settings, png, wait_status

pytestmark = pytest.mark.integration

B64 = base64.b64encode(png()).decode()


async def test_an_image_edit_finishes_while_a_long_video_runs(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path,
        engines={
            "plugins": PLUGINS,
            "pools": [{"preset": "test-slow-video"}, {"preset": "test-placed-image"}],
            "gpu_memory_gib": [80, 80],
        },
    )
    runner = open_runner(settings)
    assert isinstance(runner, LocalRunner)
    assert [(pool.name, pool.capacity) for pool in runner.pools] == [
        ("image-to-video", 1),
        ("image-to-image", 1),
    ]
    await runner.start()
    try:
        async with app_context(settings, runner) as c:
            key = await c.key(credits=10)
            h = {"x-api-key": key}
            video = {"start_image_url": B64, "prompt": "steps=600", "duration": "15"}
            r = await c.client.post("/v2/kling-3-standard-image2video", json=video, headers=h)
            rid = r.json()["request_id"]
            await wait_status(c.client, key, rid, "PROCESSING")
            image = {"image_url": B64, "prompt": "x"}
            for _ in range(3):  # sync and async, each through the image pool's own queue
                r = await c.client.post("/v1/kling-3-image2image", json=image, headers=h)
                assert r.status_code == 200, r.text
                assert json.loads(r.headers["x-output-metadata"])["gpus"] == "1"
                r = await c.client.post("/v2/kling-3-image2image", json=image, headers=h)
                await wait_status(c.client, key, r.json()["request_id"], "COMPLETED")
            status = (await c.client.get(f"/v2/requests/{rid}/status", headers=h)).json()
            assert status["status"] == "PROCESSING"  # the video still runs
            await c.client.post(f"/v2/requests/{rid}/cancel", headers=h)
            r = await wait_status(c.client, key, rid, "FAILED")
            assert "cancelled" in r.json()["error"]
    finally:
        await runner.close()


async def test_the_short_form_makes_one_pool_per_task(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, engines={"workers": 2})
    runner = open_runner(settings, devices=[])
    assert isinstance(runner, LocalRunner)
    assert [(pool.name, pool.capacity) for pool in runner.pools] == [
        ("image-to-video", 2),
        ("image-to-image", 2),
    ]
    assert open_runner(make_settings(tmp_path, engines={"workers": 0})) is None
    await asyncio.sleep(0)


async def test_video_elements_are_composed_by_the_image_engine_the_video_pool_loads(
    tmp_path: Path,
) -> None:
    """A video preset that takes no reference images (a plugin's, ``needs`` undeclared) gets
    the image engine loaded beside it in its pool, so elements still work."""
    settings = make_settings(
        tmp_path,
        engines={"preset": "custom", "video_preset": "test-slow-video"},
    )
    settings.engines.image_preset = "static-image"
    runner = open_runner(settings, devices=[])
    assert isinstance(runner, LocalRunner)
    await runner.start()
    try:
        async with app_context(settings, runner) as c:
            key = await c.key(credits=10)
            body = {
                "start_image_url": B64,
                "prompt": "steps=2",
                "duration": "3",
                "elements": [{"frontal_image_url": B64}],
            }
            r = await c.client.post(
                "/v2/kling-3-standard-image2video", json=body, headers={"x-api-key": key}
            )
            assert r.status_code == 200, r.text
            r = await wait_status(c.client, key, r.json()["request_id"], "COMPLETED")
    finally:
        await runner.close()


async def test_a_worker_that_cannot_restart_leaves_the_capacity_until_it_can(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Capacity is what the pools can take now: a worker whose restart fails is out (its job
    waits in the queue, nothing lost or charged twice) and back once a later try succeeds."""
    from kinema.runners import local

    monkeypatch.setattr(local, "RESTART_BACKOFF_S", (0.3,) * 20)
    settings = make_settings(
        tmp_path,
        engines={"preset": "custom", "video_preset": "test-crash-then-broken-video"},
        jobs={"max_attempts": 3},
    )
    settings.engines.image_preset = "static-image"
    runner = open_runner(settings, devices=[])
    assert isinstance(runner, LocalRunner)
    video_pool = runner.pools[0]
    await runner.start()
    try:
        async with app_context(settings, runner) as c:
            key = await c.key(credits=10)
            h = {"x-api-key": key}
            body = {"start_image_url": B64, "prompt": "x", "duration": "3"}
            r = await c.client.post("/v2/kling-3-standard-image2video", json=body, headers=h)
            rid = r.json()["request_id"]
            for _ in range(200):
                if video_pool.capacity == 0:
                    break
                await asyncio.sleep(0.05)
            assert video_pool.capacity == 0  # crashed, and its restart fails
            assert runner.pools[1].capacity == 1  # the image pool is untouched
            r = await c.client.post(
                "/v1/kling-3-image2image", json={"image_url": B64, "prompt": "x"}, headers=h
            )
            assert r.status_code == 200
            status = (await c.client.get(f"/v2/requests/{rid}/status", headers=h)).json()
            assert status["status"] in ("QUEUED", "PROCESSING")  # waiting, not lost
            (settings.models_dir / "broken").unlink()  # its next restart succeeds...
            for _ in range(200):
                if video_pool.capacity == 1:
                    break
                await asyncio.sleep(0.05)
            assert video_pool.capacity == 1
            # ...and the job runs again (and crashes again: this engine always does).
            r = await wait_status(c.client, key, rid, "FAILED", timeout=30)
            assert "lost" in r.json()["error"]
            assert r.json()["metrics"]["cost"] == 0
    finally:
        await runner.close()
