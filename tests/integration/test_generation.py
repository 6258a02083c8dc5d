"""Both endpoints, both paths, through HTTP with the static engines (fast) in a real worker."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.conftest import (
    PLUGINS,
    Ctx,
    ImageServer,
    app_context,
    make_settings,
    png,
    runner_fixture,
    wait_status,
)

pytestmark = pytest.mark.integration


slow_echo = runner_fixture("test-slow-video", "test-echo-image")


VIDEO = "/v1/kling-3-standard-image2video"
IMAGE = "/v1/kling-3-image2image"


async def test_sync_image_returns_png_of_the_asked_aspect(ctx: Ctx, images: ImageServer) -> None:
    key = await ctx.key(credits=1)
    body = {
        "image_url": images.add("/a.png", png()),
        "prompt": "make it blue",
        "aspect_ratio": "4:3",
    }
    r = await ctx.client.post(IMAGE, json=body, headers={"x-api-key": key})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    img = Image.open(io.BytesIO(r.content))
    assert img.format == "PNG" and img.size == (1024, 768)
    meta = json.loads(r.headers["x-output-metadata"])
    assert (meta["width"], meta["height"]) == (1024, 768)
    assert float(r.headers["x-remaining-credits"]) == pytest.approx(1 - 0.035)
    for header in (
        "x-request-id",
        "x-generation-time",
        "x-rate-limit-remaining",
        "x-rate-limit-reset-at-utc",
    ):
        assert header in r.headers


@pytest.mark.parametrize(
    ("fmt", "mime", "pil"), [("jpeg", "image/jpeg", "JPEG"), ("webp", "image/webp", "WEBP")]
)
async def test_sync_image_formats(ctx: Ctx, fmt: str, mime: str, pil: str) -> None:
    key = await ctx.key()
    data_uri = "data:image/png;base64," + base64.b64encode(png()).decode()
    body = {
        "image_url": data_uri,
        "prompt": "x",
        "output_format": fmt,
        "resolution": "2K",
        "aspect_ratio": "9:16",
    }
    r = await ctx.client.post(IMAGE, json=body, headers={"authorization": f"Bearer {key}"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == mime
    img = Image.open(io.BytesIO(r.content))
    assert img.format == pil and img.size == (1152, 2048)


async def test_sync_base64_answers_json(ctx: Ctx) -> None:
    key = await ctx.key()
    body = {"image_url": base64.b64encode(png()).decode(), "prompt": "x", "base64": True}
    r = await ctx.client.post(IMAGE, json=body, headers={"x-api-key": key})
    assert r.status_code == 200, r.text
    decoded = base64.b64decode(r.json()["image"])
    assert Image.open(io.BytesIO(decoded)).size == (1024, 576)


async def test_sync_video_is_contract_mp4(ctx: Ctx, images: ImageServer, tmp_path: object) -> None:
    from kinema.media.video import probe_mp4

    key = await ctx.key()
    body = {
        "start_image_url": images.add("/s.png", png()),
        "prompt": "a slow pan",
        "duration": 3,
        "aspect_ratio": "9:16",
    }
    r = await ctx.client.post(VIDEO, json=body, headers={"x-api-key": key})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "video/mp4"
    path = ctx.svc.settings.data_dir / "out.mp4"
    path.write_bytes(r.content)
    info = probe_mp4(path)
    assert (info["width"], info["height"]) == (1080, 1920)
    assert info["frames"] == 72 and info["fps"] == pytest.approx(24)
    assert info["has_audio"] and info["audio_codec"] == "aac"
    meta = json.loads(r.headers["x-output-metadata"])
    assert meta["has_audio"] is True and meta["duration"] == 3
    # 3 s × (0.084 + 0.042 audio surcharge)
    assert float(r.headers["x-remaining-credits"]) == pytest.approx(100 - 3 * 0.126)


async def test_video_without_audio_has_no_audio_stream(ctx: Ctx, images: ImageServer) -> None:
    from kinema.media.video import probe_mp4

    key = await ctx.key()
    body = {
        "start_image_url": images.add("/s2.png", png()),
        "prompt": "x",
        "duration": "3",
        "generate_audio": False,
        "aspect_ratio": "1:1",
    }
    r = await ctx.client.post(VIDEO, json=body, headers={"x-api-key": key})
    assert r.status_code == 200, r.text
    path = ctx.svc.settings.data_dir / "silent.mp4"
    path.write_bytes(r.content)
    info = probe_mp4(path)
    assert not info["has_audio"] and (info["width"], info["height"]) == (1080, 1080)
    assert float(r.headers["x-remaining-credits"]) == pytest.approx(100 - 3 * 0.084)


async def test_async_flow_submit_status_result_download(ctx: Ctx, images: ImageServer) -> None:
    key = await ctx.key(credits=1)
    h = {"x-api-key": key}
    body = {"image_url": images.add("/b.png", png()), "prompt": "x", "output_format": "webp"}
    r = await ctx.client.post("/v2/kling-3-image2image", json=body, headers=h)
    assert r.status_code == 200, r.text
    sub = r.json()
    assert sub["status"] == "QUEUED"
    rid = sub["request_id"]
    assert sub["poll_url"].endswith(f"/v1/requests/{rid}")
    assert sub["status_url"].endswith(f"/v2/requests/{rid}/status")
    assert sub["response_url"].endswith(f"/v2/requests/{rid}")
    assert r.headers["x-request-id"] == rid
    await wait_status(ctx.client, key, rid, "COMPLETED")
    for path in (f"/v2/requests/{rid}", f"/v1/requests/{rid}"):
        res = (await ctx.client.get(path, headers=h)).json()
        assert res["status"] == "COMPLETED"
        m = res["metrics"]
        assert m["cost"] == pytest.approx(0.035)
        assert m["remaining_credits"] == pytest.approx(1 - 0.035)
        assert m["inference_time"] > 0 and m["queue_time"] >= 0
        assert m["total_time"] >= m["inference_time"]
    # The output URL downloads without the key, and only with a valid signature.
    output = res["output"]
    dl = await ctx.client.get(output)
    assert dl.status_code == 200 and dl.headers["content-type"] == "image/webp"
    assert Image.open(io.BytesIO(dl.content)).size == (1024, 576)
    tampered = output.replace("signature=", "signature=0")
    bad = await ctx.client.get(tampered)
    assert bad.status_code == 403 and "error" in bad.json()
    bad = await ctx.client.get(output.replace("signature=", "signature=%C2%80"))
    assert bad.status_code == 403 and "error" in bad.json()


async def test_request_id_is_visible_only_to_its_key(ctx: Ctx) -> None:
    owner, other = await ctx.key(), await ctx.key()
    body = {"image_url": base64.b64encode(png()).decode(), "prompt": "x"}
    rid = (
        await ctx.client.post("/v2/kling-3-image2image", json=body, headers={"x-api-key": owner})
    ).json()["request_id"]
    for path in (f"/v2/requests/{rid}/status", f"/v2/requests/{rid}", f"/v1/requests/{rid}"):
        r = await ctx.client.get(path, headers={"x-api-key": other})
        assert r.status_code == 404
        assert r.json() == {"error": f"Request {rid} not found"}


async def test_unknown_request_id_is_404(ctx: Ctx) -> None:
    key = await ctx.key()
    r = await ctx.client.get("/v2/requests/nope/status", headers={"x-api-key": key})
    assert r.status_code == 404 and r.json() == {"error": "Request nope not found"}


async def test_credits_endpoint(ctx: Ctx) -> None:
    key = await ctx.key(credits=12.5)
    r = await ctx.client.get("/v1/get-user-credits", headers={"x-api-key": key})
    assert r.status_code == 200 and r.json() == {"credits": 12.5}


async def test_multi_prompt_is_one_generation_per_shot_with_exact_duration(ctx: Ctx) -> None:
    from kinema.media.video import probe_mp4

    key = await ctx.key()
    body = {
        "start_image_url": base64.b64encode(png()).decode(),
        "duration": "5",
        "multi_prompt": [
            {"prompt": "wide shot", "duration": "2"},
            {"prompt": "close-up", "duration": 3},
        ],
    }
    r = await ctx.client.post(VIDEO, json=body, headers={"x-api-key": key})
    assert r.status_code == 200, r.text
    meta = json.loads(r.headers["x-output-metadata"])
    assert meta["shots"] == 2 and meta["frames"] == 120
    path = ctx.svc.settings.data_dir / "shots.mp4"
    path.write_bytes(r.content)
    info = probe_mp4(path)
    assert info["frames"] == 120 and info["duration"] == pytest.approx(5.0, abs=0.05)
    assert info["audio_duration"] == pytest.approx(5.0, abs=0.05)


async def test_video_elements_are_composed_into_the_first_frame(ctx: Ctx) -> None:
    key = await ctx.key()
    b64 = base64.b64encode(png()).decode()
    body = {
        "start_image_url": b64,
        "prompt": "@Element1 waves",
        "duration": 3,
        "elements": [{"frontal_image_url": b64, "reference_image_urls": [b64]}],
    }
    r = await ctx.client.post(VIDEO, json=body, headers={"x-api-key": key})
    assert r.status_code == 200, r.text
    meta = json.loads(r.headers["x-output-metadata"])
    assert meta["composed_keyframe"] is True and meta["frames"] == 72


async def test_elements_need_an_engine_that_takes_them(tmp_path: Path, slow_echo: Any) -> None:
    settings = make_settings(
        tmp_path,
        engines={
            "preset": "custom",
            "plugins": PLUGINS,
            "video_preset": "test-slow-video",
            "image_preset": "test-echo-image",
        },
    )
    async with app_context(settings, slow_echo) as c:
        key = await c.key(credits=5)
        b64 = base64.b64encode(png()).decode()
        body = {
            "start_image_url": b64,
            "prompt": "@Element1 waves",
            "elements": [{"frontal_image_url": b64}],
        }
        r = await c.client.post(VIDEO, json=body, headers={"x-api-key": key})
        assert r.status_code == 400
        assert r.json()["error"].startswith("elements:") and "test-echo-image" in r.json()["error"]
        r = await c.client.get("/v1/get-user-credits", headers={"x-api-key": key})
        assert r.json() == {"credits": 5.0}


async def test_intelligence_splits_the_prompt_into_shots(ctx: Ctx) -> None:
    key = await ctx.key()
    body = {
        "start_image_url": base64.b64encode(png()).decode(),
        "duration": "4",
        "shot_type": "intelligence",
        "prompt": "Shot 1: a door opens. Shot 2: a dog runs in",
    }
    r = await ctx.client.post(VIDEO, json=body, headers={"x-api-key": key})
    assert r.status_code == 200, r.text
    meta = json.loads(r.headers["x-output-metadata"])
    assert meta["shots"] == 2 and meta["frames"] == 96
