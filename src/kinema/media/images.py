"""Image decoding, verification, fitting and encoding (Pillow; safe in the API process)."""

from __future__ import annotations

import io
import struct

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from kinema.errors import InvalidInput

ALLOWED_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "WEBP", "GIF", "BMP")
"""Pillow format names :func:`decode_image` accepts (the JPEG plugin also opens the MPO files
phone cameras write). TIFF, ICO, PSD and the rest are refused: rare as web inputs, and more
decoder surface."""

IMAGE_MIME: dict[str, str] = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
"""Output formats of :func:`encode_image` and their MIME types."""

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_BACKGROUND = (255, 255, 255)
_SIXTEEN_BIT = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})


def fit_image(image: Image.Image, width: int, height: int) -> Image.Image:
    """Center-crop ``image`` to the aspect ``width:height`` and resize it to exactly that size."""
    rgb = image.convert("RGB")
    return ImageOps.fit(rgb, (width, height), method=Image.Resampling.LANCZOS, centering=(0.5, 0.5))


def decode_image(data: bytes, *, field: str, max_pixels: int = 40_000_000) -> Image.Image:
    """Decode and verify an input image; return it upright, fully loaded, in RGB.

    Accepted formats (:data:`ALLOWED_FORMATS`): PNG (incl. APNG), JPEG (incl. MPO), WEBP, GIF
    and BMP; for animated GIF/WEBP/PNG the first frame is used. The EXIF orientation is applied and
    transparency is composited onto white. Raises :class:`InvalidInput` naming ``field`` for
    empty, corrupt, truncated or unsupported data and for images over ``max_pixels`` pixels
    (checked from the header, before any pixel is decoded).
    """
    return _to_rgb(_upright(verify_image(data, field=field, max_pixels=max_pixels)))


def check_header(data: bytes, *, field: str, max_pixels: int = 40_000_000) -> int:
    """The checks of :func:`verify_image` that need only the header — not empty, an accepted
    format, within the pixel limit: what must hold before any process decodes the image (no
    decompression bomb gets past it). Tens of microseconds; no pixel is decoded. Returns the
    image's pixel count."""
    if not data:
        raise InvalidInput(f"{field}: image data is empty")
    with _open(data, field=field, max_pixels=max_pixels) as image:
        width, height = image.size
    return width * height


def verify_image(data: bytes, *, field: str, max_pixels: int = 40_000_000) -> Image.Image:
    """The checks of :func:`decode_image` — format, pixel limit, structure, every pixel
    decodable — without orientation or colour conversion (what the API needs to accept an
    input). Returns the image as stored, fully loaded."""
    if not data:
        raise InvalidInput(f"{field}: image data is empty")
    _verify(data, field=field, max_pixels=max_pixels)
    image = _open(data, field=field, max_pixels=max_pixels)
    try:
        image.load()
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise InvalidInput(f"{field}: corrupt or truncated image ({exc})") from exc
    return image


def header_pixels(data: bytes) -> int | None:
    """Width × height as the image's header declares them, read without decoding any pixel (a
    few microseconds whatever the size); None when no header can be read (then
    :func:`verify_image` says why)."""
    if data[:8] == _PNG_SIGNATURE and data[12:16] == b"IHDR":  # the common case, without Pillow
        width, height = struct.unpack(">II", data[16:24])
        return int(width) * int(height)
    try:
        with Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS) as image:
            width, height = image.size
    except Exception:  # Pillow raises a wide mix of types (and bomb warnings) on a bad header
        return None
    return width * height


def _open(data: bytes, *, field: str, max_pixels: int) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except UnidentifiedImageError as exc:
        allowed = ", ".join(sorted(ALLOWED_FORMATS))
        raise InvalidInput(
            f"{field}: is not a readable image (supported formats: {allowed})"
        ) from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidInput(f"{field}: image has too many pixels (limit {max_pixels})") from exc
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise InvalidInput(f"{field}: corrupt image header ({exc})") from exc
    width, height = image.size
    if width <= 0 or height <= 0:
        raise InvalidInput(f"{field}: image has no pixels")
    if width * height > max_pixels:
        raise InvalidInput(
            f"{field}: image is {width}x{height}, more than the {max_pixels} pixel limit"
        )
    return image


def _verify(data: bytes, *, field: str, max_pixels: int) -> None:
    """Structural check (PNG chunk CRCs, missing end markers) on a throwaway handle."""
    probe = _open(data, field=field, max_pixels=max_pixels)
    try:
        probe.verify()
    except Exception as exc:  # Pillow's plugins raise a wide mix of types here
        raise InvalidInput(f"{field}: corrupt or truncated image ({exc})") from exc
    finally:
        probe.close()


def _upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; a malformed EXIF block leaves the pixels as stored."""
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # broken EXIF must not reject an otherwise good image
        return image


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in _SIXTEEN_BIT:
        wide = np.asarray(image, dtype=np.int64)
        image = Image.fromarray((wide >> 8).clip(0, 255).astype(np.uint8), mode="L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*_BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def encode_image(img: Image.Image, fmt: str) -> bytes:
    """Encode ``img`` as ``fmt`` (a key of :data:`IMAGE_MIME`): PNG, or JPEG/WEBP at quality 95."""
    key = fmt.lower()
    if key not in IMAGE_MIME:
        raise ValueError(f"unsupported output format {fmt!r}; expected one of {sorted(IMAGE_MIME)}")
    rgb = img if img.mode == "RGB" else img.convert("RGB")
    buffer = io.BytesIO()
    if key == "png":
        rgb.save(buffer, format="PNG")
    elif key == "jpeg":
        rgb.save(buffer, format="JPEG", quality=95)
    else:
        rgb.save(buffer, format="WEBP", quality=95)
    return buffer.getvalue()
