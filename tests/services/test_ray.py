"""The Ray Serve runner against a one-node Ray cluster started by the tests (2 CPUs, loopback):
jobs through the app end to end, progress, cancel, a replica killed mid-job, scale to zero and
back, and deadlines on a deployment that never answers. Every app here opens its runner from
its settings (``runner.backend = "ray"``), as ``kinema serve`` does."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

import tests.fixtures.engines  # noqa: F401 - registers the fixture presets in this process
from kinema.runners.base import RunnerLost
from kinema.runners.factory import open_runner
from kinema.runners.protocol import RunTask
from kinema.settings import Settings
from tests.conftest import (
    PLUGINS,
    Ctx,
    app_context,
    ledger_and_balance,
    make_settings,
    png,
    wait_status,
)
from tests.fixtures.raycluster import RayCluster, replica_pids
from tests.fixtures.specs import video_spec

pytestmark = [
    pytest.mark.services,
    pytest.mark.ray,
    # Ray Serve's own models still use pydantic 1-style fields (on import).
    pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince20"),
    # Serve warns of the autoscaling field it still reads (kinema.runners.ray_deploy).
    pytest.mark.filterwarnings("ignore:The `metrics_interval_s`:DeprecationWarning"),
]

B64 = base64.b64encode(png()).decode()
VIDEO = "/v2/kling-3-standard-image2video"
IMAGE = "/v2/kling-3-image2image"


def ray_settings(
    tmp_path: Path, cluster: RayCluster, *, video: str = "test-slow-video", **runner: Any
) -> Settings:
    """An app whose pools are Serve applications of their own (a name per test)."""
    return make_settings(
        tmp_path,
        engines={
            "preset": "custom",
            "video_preset": video,
            "image_preset": "static-image",
            "plugins": PLUGINS,
            "device": "cpu",
            "startup_timeout_s": 60,
        },
        runner={
            "backend": "ray",
            "ray_address": cluster.address,
            "app_name": f"t{uuid.uuid4().hex[:8]}",
            "replica_cpus": 0.25,
            "call_timeout_s": 20,
            **runner,
        },
    )


async def _delete_apps(settings: Settings) -> None:
    """Leave the cluster as found: the test's applications deleted (their replicas stopped)."""
    import ray
    from ray import serve

    if not ray.is_initialized():  # never joined (a Serve call now would start a Ray here)
        return
    prefix = settings.runner.app_name + "-"

    def delete() -> None:
        for name in serve.status().applications:
            if name.startswith(prefix):
                serve.delete(name, _blocking=False)

    await asyncio.wait_for(asyncio.to_thread(delete), 30)


async def _result(c: Ctx, key: str, rid: str) -> dict[str, Any]:
    r = await c.client.get(f"/v2/requests/{rid}", headers={"x-api-key": key})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def _books_balance(c: Ctx, key: str) -> None:
    key_id = (await c.svc.keys.authenticate(key)).id
    ledger, balance = await ledger_and_balance(c.svc, key_id)
    assert ledger == balance


async def test_jobs_of_both_pools_run_on_replicas_started_for_them(
    tmp_path: Path, ray_cluster: RayCluster
) -> None:
    settings = ray_settings(tmp_path, ray_cluster)
    try:
        async with app_context(settings, None) as c:
            assert [(p.name, p.capacity) for p in c.svc.runner.pools] == [  # type: ignore[union-attr]
                ("image-to-video", 1),
                ("image-to-image", 1),
            ]
            key = await c.key(credits=10)
            h = {"x-api-key": key}
            body = {"start_image_url": B64, "prompt": "steps=3", "duration": "3"}
            video = await c.client.post(VIDEO, json=body, headers=h)
            image = await c.client.post(IMAGE, json={"image_url": B64, "prompt": "x"}, headers=h)
            for r in (video, image):
                rid = r.json()["request_id"]
                await wait_status(c.client, key, rid, "COMPLETED", timeout=90)
                body = await _result(c, key, rid)
                assert body["metrics"]["startup_time"] > 0  # a cold start: from zero replicas
                assert body["metrics"]["inference_time"] >= 0
                out = await c.client.get(body["output"].removeprefix("http://kinema.test"))
                assert out.status_code == 200 and len(out.content) > 100
            sync = await c.client.post(
                "/v1/kling-3-image2image", json={"image_url": B64, "prompt": "y"}, headers=h
            )
            assert sync.status_code == 200, sync.text  # handed off, inputs inline, warm
            await _books_balance(c, key)
    finally:
        await _delete_apps(settings)


async def _running_with_progress(c: Ctx, key: str, rid: str, timeout: float = 60) -> float:
    """Wait until the job reports progress from its replica; returns it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = await c.client.get(f"/v2/requests/{rid}/status", headers={"x-api-key": key})
        body = r.json()
        assert body["status"] in ("QUEUED", "PROCESSING"), body
        if body.get("progress"):
            return float(body["progress"])
        await asyncio.sleep(0.05)
    raise AssertionError("no progress reached the job")


async def _job(c: Ctx, rid: str) -> Any:
    from kinema.jobs import repository as repo

    return await c.svc.db.read(lambda conn: repo.get(conn, rid))


async def test_progress_reaches_the_job_and_a_cancel_stops_its_run_on_the_replica(
    tmp_path: Path, ray_cluster: RayCluster
) -> None:
    settings = ray_settings(tmp_path, ray_cluster)
    try:
        async with app_context(settings, None) as c:
            key = await c.key(credits=10)
            h = {"x-api-key": key}
            long = {"start_image_url": B64, "prompt": "steps=600", "duration": "3"}  # 60 s
            rid = (await c.client.post(VIDEO, json=long, headers=h)).json()["request_id"]
            assert 0 < await _running_with_progress(c, key, rid) < 1
            asked = time.monotonic()
            await c.client.post(f"/v2/requests/{rid}/cancel", headers=h)
            r = await wait_status(c.client, key, rid, "FAILED", timeout=30)
            assert "cancelled" in r.json()["error"], r.json()
            assert time.monotonic() - asked < 10
            assert await c.svc.keys.balance((await c.svc.keys.authenticate(key)).id) == 10e6
            # The replica is free again (its engine stopped): the next job runs there, warm.
            short = {"start_image_url": B64, "prompt": "steps=3", "duration": "3"}
            rid = (await c.client.post(VIDEO, json=short, headers=h)).json()["request_id"]
            await wait_status(c.client, key, rid, "COMPLETED", timeout=60)
            assert (await _result(c, key, rid))["metrics"]["startup_time"] == 0
            await _books_balance(c, key)
    finally:
        await _delete_apps(settings)


async def test_a_replica_killed_mid_job_is_replaced_and_the_job_retried_once(
    tmp_path: Path, ray_cluster: RayCluster
) -> None:
    settings = ray_settings(tmp_path, ray_cluster)
    app = f"{settings.runner.app_name}-image-to-video"
    try:
        async with app_context(settings, None) as c:
            key = await c.key(credits=10)
            h = {"x-api-key": key}
            body = {"start_image_url": B64, "prompt": "steps=30", "duration": "3"}
            rid = (await c.client.post(VIDEO, json=body, headers=h)).json()["request_id"]
            await _running_with_progress(c, key, rid)
            (pid,) = replica_pids(app)
            os.kill(pid, signal.SIGKILL)
            await wait_status(c.client, key, rid, "COMPLETED", timeout=90)
            job = await _job(c, rid)
            assert job.attempts == 2  # lost once (RunnerLost), run again on a new replica
            assert replica_pids(app) != [pid]
            price = job.price_micros
            key_id = (await c.svc.keys.authenticate(key)).id
            assert await c.svc.keys.balance(key_id) == 10e6 - price  # charged once
            await _books_balance(c, key)
    finally:
        await _delete_apps(settings)


async def test_a_pool_scaled_to_zero_comes_back_for_the_next_job_and_reports_its_start(
    tmp_path: Path, ray_cluster: RayCluster
) -> None:
    settings = ray_settings(tmp_path, ray_cluster, video="static-video", downscale_delay_s=1)
    app = f"{settings.runner.app_name}-image-to-image"
    try:
        async with app_context(settings, None) as c:
            key = await c.key(credits=10)
            h = {"x-api-key": key}
            edit = {"image_url": B64, "prompt": "x"}
            starts = []
            for n in range(2):
                rid = (await c.client.post(IMAGE, json=edit, headers=h)).json()["request_id"]
                await wait_status(c.client, key, rid, "COMPLETED", timeout=60)
                starts.append((await _result(c, key, rid))["metrics"]["startup_time"])
                if n == 0:
                    deadline = time.monotonic() + 60
                    while replica_pids(app):  # idle past the delay: released, process gone
                        assert time.monotonic() < deadline, "the replica was never released"
                        await asyncio.sleep(0.2)
            assert all(s > 0 for s in starts), starts  # both waited for a cold start
            await _books_balance(c, key)
    finally:
        await _delete_apps(settings)


async def test_replicas_that_fail_to_start_end_each_attempt_with_the_reason_and_a_refund(
    tmp_path: Path, ray_cluster: RayCluster
) -> None:
    settings = ray_settings(tmp_path, ray_cluster, video="test-broken-video")
    settings.jobs.max_attempts = 2
    try:
        async with app_context(settings, None) as c:
            key = await c.key(credits=10)
            h = {"x-api-key": key}
            body = {"start_image_url": B64, "prompt": "a cat", "duration": "3"}
            rid = (await c.client.post(VIDEO, json=body, headers=h)).json()["request_id"]
            r = await wait_status(c.client, key, rid, "FAILED", timeout=60)
            assert (await _job(c, rid)).attempts == 2, r.json()
            assert await c.svc.keys.balance((await c.svc.keys.authenticate(key)).id) == 10e6
            await _books_balance(c, key)
    finally:
        await _delete_apps(settings)


async def test_a_deployment_that_never_answers_ends_the_run_within_its_deadline(
    tmp_path: Path, ray_cluster: RayCluster
) -> None:
    # Each replica asks for a GPU; the cluster has none: a run would wait forever in Serve.
    settings = ray_settings(tmp_path, ray_cluster)
    settings.engines.device = "auto"
    settings.engines.startup_timeout_s = 3
    runner = open_runner(settings)
    assert runner is not None
    await runner.start()
    try:
        spec = video_spec("j", preset="test-slow-video")
        task = RunTask(job_id="j", spec=spec, inline={"inputs/j/00-start_image": png()})
        begun = time.monotonic()
        with pytest.raises(RunnerLost, match="no replica took the run within 3 s"):
            await runner.run(task, lambda _: None, lambda: None)
        assert time.monotonic() - begun < 3 + 2
    finally:
        await runner.close()
        await _delete_apps(settings)


def test_an_unreachable_cluster_is_a_lost_runner_within_the_call_deadline() -> None:
    # In a process of its own: this one has joined the test cluster (one connection a process).
    code = (
        "import asyncio, os, time\n"
        "from kinema.runners.ray_calls import call, connect\n"
        "from kinema.runners.base import RunnerLost\n"
        "async def main():\n"
        "    t = time.monotonic()\n"
        "    try:\n"
        "        await call(connect, '127.0.0.1:9', timeout_s=3, what='connecting')\n"
        "    except RunnerLost as exc:\n"
        "        print('lost', round(time.monotonic() - t, 1), exc, flush=True)\n"
        "    os._exit(0)  # the connect left running in its thread is not waited for\n"
        "asyncio.run(main())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    out = done.stdout.strip()
    assert out.startswith("lost"), (out, done.stderr[-2000:])
    assert float(out.split()[1]) <= 3.5, out


def test_kinema_ray_deploy_deploys_every_pool_and_exits(
    tmp_path: Path, ray_cluster: RayCluster
) -> None:
    from click.testing import CliRunner
    from ray import serve

    from kinema.cli import main

    prefix = f"t{uuid.uuid4().hex[:8]}"
    env = {
        "KINEMA_RUNNER__BACKEND": "ray",
        "KINEMA_RUNNER__RAY_ADDRESS": ray_cluster.address,
        "KINEMA_RUNNER__APP_NAME": prefix,
        "KINEMA_ENGINES__PRESET": "static",
        "KINEMA_ENGINES__DEVICE": "cpu",
    }
    result = CliRunner().invoke(main, ["--data-dir", str(tmp_path), "ray", "deploy"], env=env)
    assert result.exit_code == 0, result.output
    assert f"{prefix}-image-to-video: static-video, static-image; 0 GPUs" in result.output
    assert f"{prefix}-image-to-image: static-image; 0 GPUs per replica, 0..1" in result.output
    names = set(serve.status().applications)
    assert {f"{prefix}-image-to-video", f"{prefix}-image-to-image"} <= names
    for name in names:
        if name.startswith(prefix):
            serve.delete(name, _blocking=False)


async def test_an_application_from_the_serve_config_builder_serves_the_app(
    tmp_path: Path, ray_cluster: RayCluster
) -> None:
    """What a Serve config file (a KubeRay RayService) deploys: ``import_path:
    kinema.runners.ray_deploy:build`` with the settings file; the API uses it as it is."""
    from ray import serve

    from kinema.runners.ray_calls import call, connect
    from kinema.runners.ray_deploy import build
    from tests.conftest import STORAGE

    settings = ray_settings(tmp_path, ray_cluster, video="static-video", deploy_on_start=False)
    config = tmp_path / "kinema.toml"
    config.write_text(
        f'data_dir = "{tmp_path}"\n'
        f'[storage]\npath = "{STORAGE}"\n'
        f'[engines]\npreset = "static"\ndevice = "cpu"\nplugins = {PLUGINS!r}\n'
        f'[runner]\napp_name = "{settings.runner.app_name}"\nreplica_cpus = 0.25\n'
    )
    # Joined first: a Serve call in a process that has not would start a Ray of its own.
    await call(connect, ray_cluster.address, timeout_s=20, what="connecting")
    for pool in ("image-to-video", "image-to-image"):
        app = build({"pool": pool, "config": str(config)})
        name = f"{settings.runner.app_name}-{pool}"
        await asyncio.to_thread(serve.run, app, name=name, route_prefix=None)
    try:
        async with app_context(settings, None) as c:
            key = await c.key(credits=10)
            edit = {"image_url": B64, "prompt": "x"}
            r = await c.client.post(IMAGE, json=edit, headers={"x-api-key": key})
            await wait_status(c.client, key, r.json()["request_id"], "COMPLETED", timeout=60)
    finally:
        await _delete_apps(settings)
