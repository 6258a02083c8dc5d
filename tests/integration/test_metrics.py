"""GET /metrics after real requests and jobs: the counts are the app's own (one registry per
app), labelled by route template, state and preset, never by a key."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from kinema.runners.local import LocalRunner
from tests.conftest import Ctx, app_context, make_settings, png, wait_status, worker_config

pytestmark = pytest.mark.integration

B64 = base64.b64encode(png()).decode()
IMAGE = "/v1/kling-3-image2image"
PRESET = "static-image"
PRICE = 0.035
"""What one kling-3-image2image request costs."""

FAILING = ["tests.fixtures.engines", "tests.fixtures.failing"]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(ctx: Ctx) -> tuple[str, Samples]:
    r = await ctx.client.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return r.text, samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


async def settled(ctx: Ctx, state: str, preset: str = PRESET) -> Samples:
    """Samples once a job of ``preset`` was counted ``state`` (a sync job is answered a moment
    before its settle). They come from the scrape after the one that saw it: a scrape reads the
    store before it renders, so a job that settled in between is counted settled and still
    current in that one."""
    for _ in range(200):
        _, samples = await scrape(ctx)
        if value(samples, "kinema_jobs_total", state=state, preset=preset):
            return (await scrape(ctx))[1]
        await asyncio.sleep(0.025)
    raise AssertionError(f"no {state} job counted")


async def test_one_v1_request_counts_its_route_its_job_and_its_credits(ctx: Ctx) -> None:
    key = await ctx.key(credits=1)
    r = await ctx.client.post(
        IMAGE, json={"image_url": B64, "prompt": "x"}, headers={"x-api-key": key}
    )
    assert r.status_code == 200, r.text
    charged = 1 - float(r.headers["x-remaining-credits"])
    assert charged == pytest.approx(PRICE)
    samples = await settled(ctx, "COMPLETED")
    v1 = {"method": "POST", "route": "/v1/{slug}", "status": "200"}
    assert value(samples, "kinema_http_requests_total", **v1) == 1
    timed = {"method": "POST", "route": "/v1/{slug}"}
    assert value(samples, "kinema_http_request_duration_seconds_count", **timed) == 1
    assert value(samples, "kinema_jobs_total", state="COMPLETED", preset=PRESET) == 1
    assert value(samples, "kinema_jobs_total", state="FAILED", preset=PRESET) is None
    assert value(samples, "kinema_credits_charged_total", preset=PRESET) == pytest.approx(charged)
    assert value(samples, "kinema_job_run_duration_seconds_count", preset=PRESET) == 1
    assert value(samples, "kinema_job_queue_wait_seconds_count", preset=PRESET) == 1
    # Nothing settled is left in the store; the local pool has restarted no worker.
    assert value(samples, "kinema_jobs_current", state="QUEUED") == 0
    assert value(samples, "kinema_jobs_current", state="PROCESSING") == 0
    assert value(samples, "kinema_queue_depth", pool="all") == 0
    restarts = value(samples, "kinema_worker_restarts_total", pool="all")
    assert restarts == sum(w.restarts for w in ctx.svc.runner.workers)  # type: ignore[union-attr]


async def test_a_job_whose_worker_dies_counts_failed_uncharged_and_the_restarts(
    tmp_path: Path,
) -> None:
    preset = "fail-exit-mid-run"
    config = worker_config([preset, "static-image"], tmp_path / "models", heartbeat_s=0.2)
    config = config.model_copy(update={"plugins": tuple(FAILING)})
    runner = LocalRunner.single(config)
    await runner.start()
    settings = make_settings(
        tmp_path,
        engines={"preset": "custom", "video_preset": preset, "image_preset": "static-image"},
        jobs={"max_attempts": 2},
    )
    settings.engines.plugins = FAILING
    try:
        async with app_context(settings, runner) as ctx:
            key = await ctx.key(credits=5)
            body = {"start_image_url": B64, "prompt": "x", "duration": "3"}
            h = {"x-api-key": key}
            r = await ctx.client.post("/v2/kling-3-standard-image2video", json=body, headers=h)
            assert r.status_code == 200, r.text
            await wait_status(ctx.client, key, r.json()["request_id"], "FAILED", timeout=60)
            samples = await settled(ctx, "FAILED", preset)
            # Lost once and handed back, lost again and failed: one settle, two restarts.
            assert value(samples, "kinema_jobs_total", state="FAILED", preset=preset) == 1
            assert value(samples, "kinema_jobs_total", state="COMPLETED", preset=preset) is None
            assert value(samples, "kinema_credits_charged_total", preset=preset) is None
            assert value(samples, "kinema_job_queue_wait_seconds_count", preset=preset) == 1
            assert value(samples, "kinema_job_run_duration_seconds_count", preset=preset) is None
            assert value(samples, "kinema_worker_restarts_total", pool="all") == 2
    finally:
        await runner.close()


async def test_labels_are_route_templates_and_never_keys(ctx: Ctx) -> None:
    key = await ctx.key(credits=1)
    record = await ctx.svc.keys.authenticate(key)
    h = {"x-api-key": key}
    r = await ctx.client.get("/v2/requests/some-id/status", headers=h)
    assert r.status_code == 404
    assert (await ctx.client.get("/no/such/path/123")).status_code == 404
    text, samples = await scrape(ctx)
    templated = {"method": "GET", "route": "/v2/requests/{request_id}/status", "status": "404"}
    assert value(samples, "kinema_http_requests_total", **templated) == 1
    unmatched = {"method": "GET", "route": "unmatched", "status": "404"}
    assert value(samples, "kinema_http_requests_total", **unmatched) == 1
    assert "some-id" not in text and "/no/such" not in text
    assert key not in text and record.id not in text and record.prefix not in text


async def test_jobs_waiting_on_an_api_only_replica_are_its_queue_depth(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, engines={"workers": 0})
    async with app_context(settings, None) as ctx:
        key = await ctx.key(credits=1)
        body = {"image_url": B64, "prompt": "x"}
        for _ in range(2):
            r = await ctx.client.post(
                "/v2/kling-3-image2image", json=body, headers={"x-api-key": key}
            )
            assert r.status_code == 200, r.text
        _, samples = await scrape(ctx)
        assert value(samples, "kinema_jobs_current", state="QUEUED") == 2
        assert value(samples, "kinema_jobs_current", state="PROCESSING") == 0
        # No runner here: a queue is named by its task.
        assert value(samples, "kinema_queue_depth", pool="image-to-image") == 2
        assert value(samples, "kinema_queue_depth", pool="image-to-video") == 0
        assert value(samples, "kinema_worker_restarts_total", pool="all") is None


async def test_metrics_off_serves_no_route_and_counts_nothing(
    tmp_path: Path, static_runner: LocalRunner
) -> None:
    settings = make_settings(tmp_path, server={"metrics": False})
    async with app_context(settings, static_runner) as ctx:
        assert (await ctx.client.get("/metrics")).status_code == 404
        assert ctx.svc.metrics is None
