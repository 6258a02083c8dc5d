"""Contract parameters that live in the gateway rather than in an engine, through HTTP with the
static engines: ``base64`` on the video endpoint, and the video defaults as they reach the MP4.
docs/engines.md, "Contract parameters → tests", maps each contract row to its tests."""

from __future__ import annotations

import base64
import json

import pytest

from kinema.media.video import probe_mp4
from tests.conftest import Ctx, png

pytestmark = pytest.mark.integration

VIDEO = "/v1/kling-3-standard-image2video"


async def test_sync_video_base64_answers_json_with_the_default_mp4(ctx: Ctx) -> None:
    key = await ctx.key()
    body = {"start_image_url": base64.b64encode(png()).decode(), "prompt": "x", "base64": True}
    r = await ctx.client.post(VIDEO, json=body, headers={"x-api-key": key})

    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert list(r.json()) == ["video"]
    path = ctx.svc.settings.data_dir / "b64.mp4"
    path.write_bytes(base64.b64decode(r.json()["video"]))
    info = probe_mp4(path)
    # Defaults: aspect_ratio 16:9, duration 5, generate_audio true.
    assert (info["width"], info["height"]) == (1920, 1080)
    assert info["frames"] == 120 and info["fps"] == pytest.approx(24)
    assert info["has_audio"] and info["audio_codec"] == "aac"
    meta = json.loads(r.headers["x-output-metadata"])
    assert (meta["width"], meta["height"], meta["fps"]) == (1920, 1080, 24)
    assert meta["duration"] == 5 and meta["has_audio"] is True
