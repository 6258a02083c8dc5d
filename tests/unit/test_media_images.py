"""decode_image / encode_image / fit_image: formats, verification, orientation, limits."""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import pytest
from PIL import Image

from kinema.errors import InvalidInput
from kinema.media.images import (
    ALLOWED_FORMATS,
    IMAGE_MIME,
    decode_image,
    encode_image,
    fit_image,
    verify_image,
)
from tests.fixtures.media import gradient as _gradient
from tests.fixtures.media import png_header_only as _png_header_only
from tests.fixtures.media import save as _save

pytestmark = pytest.mark.unit

FIELD = "image_url"
CHECKS = pytest.mark.parametrize("check", [decode_image, verify_image], ids=["decode", "verify"])
"""Everything decode_image refuses, verify_image (the API's check) refuses the same way."""
Check = Callable[..., Image.Image]


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF", "BMP"])
def test_supported_formats_decode_to_rgb(fmt: str) -> None:
    image = decode_image(_save(_gradient(), fmt), field=FIELD)
    assert image.mode == "RGB"
    assert image.size == (64, 48)


def test_decoded_pixels_match_a_lossless_source() -> None:
    source = _gradient()
    decoded = decode_image(_save(source, "PNG"), field=FIELD)
    assert np.array_equal(np.asarray(decoded), np.asarray(source))


def test_animated_gif_yields_the_first_frame() -> None:
    frames = [Image.new("RGB", (10, 10), color) for color in ((255, 0, 0), (0, 0, 255))]
    data = _save(frames[0], "GIF", save_all=True, append_images=frames[1:])
    pixel = decode_image(data, field=FIELD).getpixel((5, 5))
    assert pixel == (255, 0, 0)


def test_exif_orientation_is_applied() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: display needs a 90° clockwise turn
    data = _save(_gradient(64, 48), "JPEG", exif=exif)
    assert decode_image(data, field=FIELD).size == (48, 64)


def test_transparency_is_composited_onto_white() -> None:
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    rgba.putpixel((0, 0), (0, 0, 255, 255))
    decoded = decode_image(_save(rgba, "PNG"), field=FIELD)
    assert decoded.getpixel((1, 1)) == (255, 255, 255)
    assert decoded.getpixel((0, 0)) == (0, 0, 255)


def test_sixteen_bit_grayscale_keeps_its_tones() -> None:
    wide = Image.fromarray(np.full((4, 4), 0x8000, dtype=np.uint16))
    decoded = decode_image(_save(wide, "PNG"), field=FIELD)
    assert decoded.getpixel((0, 0)) == (128, 128, 128)


def test_cmyk_jpeg_becomes_rgb() -> None:
    decoded = decode_image(_save(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG"), field=FIELD)
    assert decoded.mode == "RGB"
    red, green, blue = decoded.getpixel((4, 4))  # type: ignore[misc]
    assert red > 200 and green < 60 and blue < 60


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "image data is empty"),
        (b"hello, I am text, not a picture", "is not a readable image"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "is not a readable image"),
    ],
)
@CHECKS
def test_garbage_is_refused(data: bytes, message: str, check: Check) -> None:
    with pytest.raises(InvalidInput, match=rf"^{FIELD}: {message}"):
        check(data, field=FIELD)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF"])
@CHECKS
def test_truncated_images_are_refused(fmt: str, check: Check) -> None:
    data = _save(_gradient(256, 256), fmt)
    with pytest.raises(InvalidInput, match=rf"^{FIELD}: corrupt"):
        check(data[: len(data) * 2 // 3], field=FIELD)


@CHECKS
def test_flipped_byte_in_png_fails_the_crc_check(check: Check) -> None:
    data = bytearray(_save(_gradient(), "PNG"))
    data[len(data) // 2] ^= 0xFF
    with pytest.raises(InvalidInput, match=rf"^{FIELD}: corrupt"):
        check(bytes(data), field=FIELD)


@CHECKS
def test_unlisted_formats_are_refused(check: Check) -> None:
    assert "TIFF" not in ALLOWED_FORMATS
    with pytest.raises(
        InvalidInput,
        match=r"is not a readable image \(supported formats: BMP, GIF, JPEG, PNG, WEBP\)$",
    ):
        check(_save(_gradient(), "TIFF"), field=FIELD)


@CHECKS
def test_pixel_limit_is_checked_from_the_header(check: Check) -> None:
    data = _save(_gradient(64, 48), "PNG")
    with pytest.raises(InvalidInput, match=r"is 64x48, more than the 3000 pixel limit"):
        check(data, field=FIELD, max_pixels=3000)
    assert check(data, field=FIELD, max_pixels=64 * 48).size == (64, 48)


@pytest.mark.parametrize("side", [8000, 10_000, 100_000])
@CHECKS
def test_decompression_bombs_are_refused(side: int, check: Check) -> None:
    # 8000² passes Pillow's guard but not ours; 10000² makes Pillow warn, 100000² raise.
    with pytest.raises(InvalidInput, match=rf"^{FIELD}: image .*pixel"):
        check(_png_header_only(side, side), field=FIELD)


@pytest.mark.parametrize("fmt", sorted(IMAGE_MIME))
def test_encode_round_trips(fmt: str) -> None:
    source = _gradient()
    data = encode_image(source, fmt)
    with Image.open(io.BytesIO(data)) as reopened:
        assert Image.MIME[reopened.format or ""] == IMAGE_MIME[fmt]
        assert reopened.size == source.size
        error = np.abs(np.asarray(reopened.convert("RGB"), np.int16) - np.asarray(source))
    assert error.mean() < 2.0  # quality 95 stays close; PNG is exact
    if fmt == "png":
        assert error.max() == 0


def test_encode_converts_alpha_and_rejects_unknown_formats() -> None:
    assert encode_image(Image.new("RGBA", (4, 4)), "JPEG")[:2] == b"\xff\xd8"
    with pytest.raises(ValueError, match="unsupported output format 'gif'"):
        encode_image(_gradient(), "gif")


def test_fit_image_crops_centre_to_exact_size() -> None:
    wide = Image.new("RGB", (300, 100), (255, 0, 0))
    wide.paste((0, 255, 0), (100, 0, 200, 100))
    fitted = np.asarray(fit_image(wide, 50, 50), dtype=np.int16)
    assert fitted.shape == (50, 50, 3)
    # Only green survives the crop (the outermost columns may see a little filter bleed).
    assert np.abs(fitted[:, 2:-2] - (0, 255, 0)).max() <= 2
