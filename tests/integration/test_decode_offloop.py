"""An input image is decoded on the event loop only when its header declares few pixels: a
PNG of a few kilobytes can declare tens of megapixels, and decoding those on the loop froze
every other request (150 ms for a 38 KB 6300×6300 PNG)."""

from __future__ import annotations

import base64
import io
import threading
from typing import Any

import pytest
from PIL import Image

import kinema.api.deps as deps
import kinema.api.service as service
from kinema.api.service import INLINE_DECODE_PIXELS
from kinema.media.images import header_pixels
from tests.conftest import Ctx, png

pytestmark = pytest.mark.integration


def _flat_png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (width, height), 128).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def huge() -> bytes:
    data = _flat_png(4000, 4000)  # 16 MP in ~16 KB
    assert len(data) < 64 * 1024
    return data


@pytest.mark.parametrize(("size", "inline"), [((64, 48), True), ((4000, 4000), False)])
async def test_decoding_is_decided_by_pixels_not_bytes(
    ctx: Ctx, monkeypatch: pytest.MonkeyPatch, huge: bytes, size: tuple[int, int], inline: bool
) -> None:
    threads: list[int] = []
    verify = service.verify_image

    def recording(*args: Any, **kwargs: Any) -> Any:
        threads.append(threading.get_ident())
        return verify(*args, **kwargs)

    monkeypatch.setattr(service, "verify_image", recording)
    image = png(*size) if inline else huge
    body = {"image_url": base64.b64encode(image).decode(), "prompt": "x"}
    key = await ctx.key()
    r = await ctx.client.post("/v2/kling-3-image2image", json=body, headers={"x-api-key": key})
    assert r.status_code == 200, r.text
    assert threads, "the image was never verified"
    loop_thread = threading.get_ident()
    assert all((t == loop_thread) is inline for t in threads), threads


def test_header_pixels_reads_the_declared_size_only(huge: bytes) -> None:
    assert header_pixels(huge) == 16_000_000
    assert header_pixels(png(64, 48)) == 64 * 48 <= INLINE_DECODE_PIXELS
    buf = io.BytesIO()
    Image.new("RGB", (300, 200)).save(buf, format="JPEG")
    assert header_pixels(buf.getvalue()) == 60_000
    assert header_pixels(b"not an image") is None


async def test_a_large_body_is_parsed_off_the_loop(
    ctx: Ctx, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[int] = []
    preparse = deps.preparse

    def recording(chunks: list[bytes]) -> Any:
        threads.append(threading.get_ident())
        return preparse(chunks)

    monkeypatch.setattr(deps, "preparse", recording)
    noise = Image.frombytes("RGB", (800, 600), bytes(range(256)) * 5625)
    buf = io.BytesIO()
    noise.save(buf, format="PNG", compress_level=0)
    body = {"image_url": base64.b64encode(buf.getvalue()).decode(), "prompt": "x"}
    assert len(body["image_url"]) > deps.PREPARSE_BYTES
    key = await ctx.key()
    r = await ctx.client.post("/v2/kling-3-image2image", json=body, headers={"x-api-key": key})
    assert r.status_code == 200, r.text
    assert threads and threads[0] != threading.get_ident()
