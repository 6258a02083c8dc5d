"""A battery of malformed, unauthorized, over-budget and over-rate requests: every one a precise
4xx with {"error"} and never a 5xx; nothing is charged for any of them."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Ctx, ImageServer, app_context, make_settings, png

pytestmark = pytest.mark.integration

VIDEO = "/v1/kling-3-standard-image2video"
IMAGE = "/v2/kling-3-image2image"
B64 = base64.b64encode(png()).decode()


def _img(**extra: Any) -> dict[str, Any]:
    return {"image_url": B64, "prompt": "x", **extra}


async def test_missing_and_bad_keys(ctx: Ctx) -> None:
    r = await ctx.client.post(IMAGE, json=_img())
    assert r.status_code == 401 and "missing API key" in r.json()["error"]
    r = await ctx.client.post(IMAGE, json=_img(), headers={"x-api-key": "kin_nope"})
    assert r.status_code == 401 and r.json() == {"error": "invalid API key"}
    r = await ctx.client.get("/v1/get-user-credits", headers={"authorization": "Basic abc"})
    assert r.status_code == 401


async def test_revoked_key(ctx: Ctx) -> None:
    key = await ctx.key()
    await ctx.svc.keys.revoke(key)
    r = await ctx.client.post(IMAGE, json=_img(), headers={"x-api-key": key})
    assert r.status_code == 401 and "revoked" in r.json()["error"]


async def test_key_not_permitted_for_model(ctx: Ctx) -> None:
    key = await ctx.key(models=["kling-3-standard-image2video"])
    r = await ctx.client.post(IMAGE, json=_img(), headers={"x-api-key": key})
    assert r.status_code == 403
    assert r.json() == {"error": "this API key is not permitted to use kling-3-image2image"}


async def test_wrong_content_type_is_406(ctx: Ctx) -> None:
    key = await ctx.key()
    r = await ctx.client.post(
        IMAGE,
        content=b"image_url=x",
        headers={"x-api-key": key, "content-type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 406
    assert "application/json" in r.json()["error"]


async def test_unknown_model_method_and_path(ctx: Ctx) -> None:
    key = await ctx.key()
    h = {"x-api-key": key}
    r = await ctx.client.post("/v1/kling-9-imaginary", json=_img(), headers=h)
    assert r.status_code == 404 and r.json() == {"error": "model kling-9-imaginary not found"}
    r = await ctx.client.get("/v1/kling-3-image2image", headers=h)
    assert r.status_code == 405 and "not allowed" in r.json()["error"]
    for method in ("POST", "PUT", "DELETE", "OPTIONS"):  # the sync path leaves it to its route
        r = await ctx.client.request(method, "/v1/get-user-credits", json={}, headers=h)
        assert r.status_code == 405 and r.headers["allow"] == "GET", (method, r.headers)
        assert r.json() == {"error": f"method {method} not allowed on /v1/get-user-credits"}
    r = await ctx.client.get("/v1/kling-create-voice", headers=h)
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    r = await ctx.client.post("/v2/get-user-credits", json={}, headers=h)
    assert r.status_code == 404 and r.json() == {"error": "model get-user-credits not found"}
    r = await ctx.client.post("/v1/requests", json={}, headers=h)
    assert r.status_code == 404 and r.json() == {"error": "model requests not found"}
    r = await ctx.client.get("/nowhere")
    assert r.status_code == 404 and r.json() == {"error": "endpoint /nowhere not found"}


async def test_retired_model_is_410(tmp_path: Path, static_runner: Any) -> None:
    settings = make_settings(tmp_path, retired_models=["kling-3-image2image"])
    async with app_context(settings, static_runner) as c:
        r = await c.client.post(IMAGE, json=_img(), headers={"x-api-key": await c.key()})
        assert r.status_code == 410 and "retired" in r.json()["error"]


BAD_BODIES: list[tuple[str, dict[str, Any] | bytes, str]] = [
    (IMAGE, b"{not json", "not valid JSON"),
    (IMAGE, b"[1, 2]", "must be a JSON object"),
    (IMAGE, {"prompt": "x"}, "image_url"),
    (IMAGE, _img(aspect_ratio="5:4"), "aspect_ratio"),
    (IMAGE, _img(output_format="gif"), "output_format"),
    (IMAGE, _img(resolution="4K"), "resolution"),
    (IMAGE, _img(prompt=""), "prompt"),
    (IMAGE, _img(prompt="@Element1 in a hat"), "@Element1"),
    (IMAGE, _img(image_url="not base64 !!"), "image_url"),
    (IMAGE, _img(image_url=base64.b64encode(b"GIF89a-but-truncated").decode()), "image_url"),
    (IMAGE, _img(image_url="ftp://example.com/a.png"), "image_url"),
    (IMAGE, _img(image_url="http://10.0.0.1/a.png"), "image_url"),
    (IMAGE, _img(image_url="http://169.254.169.254/latest/meta-data"), "image_url"),
    (VIDEO, {"start_image_url": B64}, "prompt"),
    (VIDEO, {"start_image_url": B64, "prompt": "x", "duration": "16"}, "duration"),
    (VIDEO, {"start_image_url": B64, "prompt": "x", "duration": 2}, "duration"),
    (VIDEO, {"start_image_url": B64, "prompt": "x", "cfg_scale": 1.5}, "cfg_scale"),
    (VIDEO, {"start_image_url": B64, "prompt": "x", "generate_audio": "yes"}, "generate_audio"),
    (VIDEO, {"start_image_url": B64, "prompt": "x", "aspect_ratio": "4:3"}, "aspect_ratio"),
    (
        VIDEO,
        {
            "start_image_url": B64,
            "multi_prompt": [{"prompt": "a", "duration": "2"}],
            "duration": "5",
        },
        "add up",
    ),
    (
        VIDEO,
        {
            "start_image_url": B64,
            "end_image_url": B64,
            "duration": "5",
            "multi_prompt": [{"prompt": "a", "duration": "5"}],
        },
        "end_image_url",
    ),
    (VIDEO, {"start_image_url": B64, "prompt": "<<<voice_1>>> hi"}, "voice"),
    (VIDEO, {"start_image_url": B64, "prompt": "hi", "voice_ids": ["v1"]}, "voice_ids"),
    (
        VIDEO,
        {"start_image_url": B64, "prompt": "x", "elements": [{"frontal_image_url": B64}] * 4},
        "elements",
    ),
    (
        VIDEO,
        {
            "start_image_url": B64,
            "prompt": "x",
            "multi_prompt": [{"prompt": "a" * 513, "duration": "5"}],
        },
        "512",
    ),
]


@pytest.mark.parametrize(("path", "body", "needle"), BAD_BODIES)
async def test_bad_bodies_are_precise_400s_and_cost_nothing(
    ctx: Ctx, path: str, body: dict[str, Any] | bytes, needle: str
) -> None:
    key = await ctx.key(credits=10)
    kwargs: dict[str, Any] = (
        {"content": body, "headers": {"x-api-key": key, "content-type": "application/json"}}
        if isinstance(body, bytes)
        else {"json": body, "headers": {"x-api-key": key}}
    )
    r = await ctx.client.post(path, **kwargs)
    assert r.status_code == 400, r.text
    assert needle in r.json()["error"], r.json()
    assert (await ctx.client.get("/v1/get-user-credits", headers={"x-api-key": key})).json() == {
        "credits": 10.0
    }


async def test_input_url_errors_name_the_field(ctx: Ctx, images: ImageServer) -> None:
    key = await ctx.key()
    missing = images.add("/exists.png", png()).replace("exists", "missing")
    text = images.add("/text.txt", b"hello, not an image", "text/plain")
    for url, needle in ((missing, "404"), (text, "image")):
        body = {
            "start_image_url": base64.b64encode(png()).decode(),
            "prompt": "x",
            "end_image_url": url,
        }
        r = await ctx.client.post(VIDEO, json=body, headers={"x-api-key": key})
        assert r.status_code == 400, r.text
        assert r.json()["error"].startswith("end_image_url") and needle in r.json()["error"]


async def test_not_enough_credits_is_406_and_charges_nothing(ctx: Ctx) -> None:
    key = await ctx.key(credits=0.03)
    r = await ctx.client.post(IMAGE, json=_img(), headers={"x-api-key": key})
    assert r.status_code == 406
    assert "not enough credits" in r.json()["error"]
    r = await ctx.client.get("/v1/get-user-credits", headers={"x-api-key": key})
    assert r.json() == {"credits": 0.03}


async def test_refused_submits_carry_the_rate_limit_state_they_counted_against(ctx: Ctx) -> None:
    # Every submit counts, whatever its answer: a refused one says where the key stands.
    key = await ctx.key(credits=0.03, rate_limit="5/minute")
    h = {"x-api-key": key}
    bad_video = {"start_image_url": B64, "prompt": "x", "duration": "2"}
    answers = [
        await ctx.client.post(VIDEO, json=bad_video, headers=h),  # sync, 400
        await ctx.client.post("/v2/kling-3-image2image", json=_img(aspect_ratio="5:4"), headers=h),
        await ctx.client.post(IMAGE, json=_img(), headers=h),  # 406: 0.035 > 0.03
    ]
    assert [r.status_code for r in answers] == [400, 400, 406]
    assert [r.headers["x-rate-limit-remaining"] for r in answers] == ["4", "3", "2"]
    assert all(r.headers["x-rate-limit-reset-at-utc"].endswith("Z") for r in answers)
    assert all("retry-after" not in r.headers for r in answers)


async def test_a_body_over_the_size_limit_is_413_while_it_is_read(
    tmp_path: Path, static_runner: Any
) -> None:
    settings = make_settings(tmp_path, server={"max_body_mb": 0.01})  # 10 KiB
    async with app_context(settings, static_runner) as c:
        key = await c.key(credits=1)
        h = {"x-api-key": key}
        big = _img(image_url="A" * 20_000)
        for path in ("/v1/kling-3-image2image", IMAGE, "/v1/kling-create-voice"):
            r = await c.client.post(path, json=big, headers=h)
            assert r.status_code == 413, (path, r.text)
            assert r.json() == {
                "error": "request body exceeds the 0.01 MB limit (server.max_body_mb); "
                "send large images as URLs"
            }

        # The body is read only for a known key within its rate limit.
        assert (await c.client.post(IMAGE, json=big)).status_code == 401
        r = await c.client.post(IMAGE, json=big, headers={"x-api-key": "kin_unknown"})
        assert r.status_code == 401

        async def chunks() -> Any:  # no Content-Length: refused once past the limit
            for _ in range(30):
                yield b" " * 1000

        r = await c.client.post(
            IMAGE, content=chunks(), headers={**h, "content-type": "application/json"}
        )
        assert r.status_code == 413 and "0.01 MB" in r.json()["error"]
        small = await c.client.post(IMAGE, json=_img(), headers=h)
        assert small.status_code == 200
        r = await c.client.get("/v1/get-user-credits", headers=h)
        assert r.json() == {"credits": pytest.approx(1 - 0.035)}


async def test_rate_limit_429_with_headers(ctx: Ctx) -> None:
    key = await ctx.key(rate_limit="2/minute")
    h = {"x-api-key": key}
    first = await ctx.client.post(IMAGE, json=_img(), headers=h)
    assert first.status_code == 200 and first.headers["x-rate-limit-remaining"] == "1"
    assert (await ctx.client.post(IMAGE, json=_img(), headers=h)).status_code == 200
    r = await ctx.client.post(IMAGE, json=_img(), headers=h)
    assert r.status_code == 429
    assert "rate limit" in r.json()["error"]
    assert 1 <= int(r.headers["retry-after"]) <= 60
    # Another key is not affected.
    other = await ctx.key()
    assert (
        await ctx.client.post(IMAGE, json=_img(), headers={"x-api-key": other})
    ).status_code == 200
