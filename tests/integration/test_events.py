"""``GET /v2/requests/{id}/events``: the status as Server-Sent Events until the job ends, then its
result; the same 401/404 as the status URL."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from kinema.runners.local import LocalRunner
from tests.conftest import (
    Ctx,
    app_context,
    make_settings,
    png,
    runner_fixture,
    wait_status,
)

pytestmark = pytest.mark.integration

VIDEO = "/v2/kling-3-standard-image2video"
PHASES = ["loading", "denoising", "decoding", "encoding", "storing"]
B64 = base64.b64encode(png()).decode()


def settings(tmp_path: Path, video_preset: str) -> Any:
    engines = {"preset": "custom", "video_preset": video_preset, "image_preset": "test-echo-image"}
    return make_settings(tmp_path, engines=engines, jobs={"lease_s": 1.5})


runner = runner_fixture("test-slow-video", "test-echo-image")
failing = runner_fixture("test-failing-video", "test-echo-image")


def _parse(stream: str) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) of each event; comment lines (keep-alives) skipped."""
    events = []
    for block in stream.split("\n\n"):
        lines = [line for line in block.splitlines() if line and not line.startswith(":")]
        if lines:
            fields = dict(line.split(": ", 1) for line in lines)
            events.append((fields["event"], json.loads(fields["data"])))
    return events


async def _submit(c: Ctx, key: str, prompt: str) -> str:
    body = {"start_image_url": B64, "prompt": prompt, "duration": "3"}
    r = await c.client.post(VIDEO, json=body, headers={"x-api-key": key})
    return str(r.json()["request_id"])


async def test_events_follow_a_job_to_its_result(tmp_path: Path, runner: LocalRunner) -> None:
    async with app_context(settings(tmp_path, "test-slow-video"), runner) as c:
        key = await c.key()
        h = {"x-api-key": key}
        rid = await _submit(c, key, "steps=30")  # 3 s of 0.1 s steps
        r = await c.client.get(f"/v2/requests/{rid}/events", headers=h)
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = _parse(r.text)
        names = [name for name, _ in events]
        assert names[-2:] == ["status", "result"] and set(names[:-1]) == {"status"}
        statuses = [data["status"] for _, data in events[:-1]]
        assert statuses[-1] == "COMPLETED" and statuses[0] in ("QUEUED", "PROCESSING")
        progress = [data["progress"] for _, data in events if "progress" in data]
        assert len(set(progress)) >= 2 and progress == sorted(progress), progress
        phases = [data["phase"] for _, data in events if "phase" in data]
        assert "denoising" in phases and phases == sorted(phases, key=PHASES.index), phases
        # Each status event is the status URL's body; the result is the result URL's.
        assert events[-2][1] == (await c.client.get(f"/v2/requests/{rid}/status", headers=h)).json()
        result = events[-1][1]
        assert result == (await c.client.get(f"/v2/requests/{rid}", headers=h)).json()
        assert (await c.client.get(result["output"])).status_code == 200
        # A job already ended: its final events at once.
        again = _parse((await c.client.get(f"/v2/requests/{rid}/events", headers=h)).text)
        assert [name for name, _ in again] == ["status", "result"]


async def test_events_end_with_a_failed_status(tmp_path: Path, failing: LocalRunner) -> None:
    async with app_context(settings(tmp_path, "test-failing-video"), failing) as c:
        key = await c.key()
        rid = await _submit(c, key, "x")
        await wait_status(c.client, key, rid, "FAILED")
        r = await c.client.get(f"/v2/requests/{rid}/events", headers={"x-api-key": key})
        events = _parse(r.text)
        assert [name for name, _ in events] == ["status"]
        assert events[0][1]["status"] == "FAILED" and events[0][1]["error"]


async def test_events_need_the_submitting_key(tmp_path: Path, runner: LocalRunner) -> None:
    async with app_context(settings(tmp_path, "test-slow-video"), runner) as c:
        owner, other = await c.key(), await c.key()
        rid = await _submit(c, owner, "x")
        r = await c.client.get(f"/v2/requests/{rid}/events", headers={"x-api-key": other})
        assert r.status_code == 404 and r.json() == {"error": f"Request {rid} not found"}
        r = await c.client.get(f"/v2/requests/{rid}/events")
        assert r.status_code == 401 and "error" in r.json()
