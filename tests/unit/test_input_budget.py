"""A request's images are bounded in memory: their total pixels are checked from the headers at
submit (fetch.max_request_pixels), and the worker shrinks each to what the engine uses as soon
as it is decoded."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from PIL import Image

from kinema.runners.execute import REFERENCE_MAX_SIDE, _shrunk
from tests.conftest import app_context, make_settings, png

pytestmark = pytest.mark.unit


def test_references_shrink_to_the_reference_size_and_start_images_keep_what_covers() -> None:
    reference = _shrunk(Image.new("RGB", (6000, 4000)), None)
    assert reference.size == (REFERENCE_MAX_SIDE, 1365)
    start = _shrunk(Image.new("RGB", (8000, 6000)), (1920, 1080))
    assert start.size == (3840, 2880)  # twice what covers 1920×1080 after the center crop
    assert start.width >= 1920 and start.height >= 1080
    small = Image.new("RGB", (640, 480))
    assert _shrunk(small, (1920, 1080)) is small and _shrunk(small, None) is small


@pytest.mark.integration
async def test_a_request_over_the_pixel_budget_is_a_400_before_any_decode(
    tmp_path: Path, static_runner: object
) -> None:
    settings = make_settings(tmp_path, fetch={"max_request_pixels": 5000})
    async with app_context(settings, static_runner) as c:  # type: ignore[arg-type]
        key = await c.key(credits=1)
        image = base64.b64encode(png(64, 48)).decode()  # 3,072 pixels each
        body = {
            "image_url": image,
            "prompt": "@Element1",
            "elements": [{"frontal_image_url": image}],
        }
        r = await c.client.post("/v1/kling-3-image2image", json=body, headers={"x-api-key": key})
        assert r.status_code == 400
        assert r.json()["error"].startswith(
            "the request's 2 images have 6,144 pixels in all, over the limit of 5,000 "
            "(fetch.max_request_pixels)"
        )
        alone = {"image_url": image, "prompt": "x"}
        r = await c.client.post("/v1/kling-3-image2image", json=alone, headers={"x-api-key": key})
        assert r.status_code == 200
