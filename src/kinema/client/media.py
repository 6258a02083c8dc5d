"""Inputs as the API takes them: a URL or ``data:`` URI passes as it is; a path, an open file,
bytes or a PIL image is read here and sent inline as a ``data:`` URI (so a local file needs no
image host, and the server never has to reach the caller's network)."""

from __future__ import annotations

import base64
import binascii
import io
import os
from pathlib import Path
from typing import IO, Any, TypeAlias

from kinema.client.errors import InvalidRequest

__all__ = ["MediaInput", "to_data_uri", "to_url"]

MediaInput: TypeAlias = "str | os.PathLike[str] | bytes | bytearray | IO[bytes] | Any"
"""A URL, a ``data:`` URI, bare base64, a path, bytes, a binary file or a ``PIL.Image.Image``
(typed ``Any`` for PIL so that Pillow stays optional)."""

_SCHEMES = ("http://", "https://", "data:")
# A string that is no URL, no file and not even base64 is a mistyped path: say so here instead
# of letting the server answer "cannot decode". Paths longer than this are not tried as files.
_MAX_PATH = 4096

# (magic bytes at offset, offset, media type), first match wins.
_SIGNATURES: tuple[tuple[bytes, int, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", 0, "image/png"),
    (b"\xff\xd8\xff", 0, "image/jpeg"),
    (b"GIF8", 0, "image/gif"),
    (b"WEBP", 8, "image/webp"),
    (b"WAVE", 8, "audio/wav"),
    (b"ID3", 0, "audio/mpeg"),
    (b"\xff\xfb", 0, "audio/mpeg"),
    (b"\xff\xf3", 0, "audio/mpeg"),
    (b"ftypqt", 4, "video/quicktime"),
    (b"ftyp", 4, "video/mp4"),
)


def media_type(data: bytes) -> str:
    """The media type ``data`` starts like, else ``application/octet-stream``."""
    for magic, offset, kind in _SIGNATURES:
        if data[offset : offset + len(magic)] == magic:
            return kind
    return "application/octet-stream"


def to_data_uri(data: bytes) -> str:
    """``data`` as a base64 ``data:`` URI with its sniffed media type."""
    return f"data:{media_type(data)};base64,{base64.b64encode(data).decode()}"


def _pil_png(value: Any) -> bytes | None:
    """A PIL image encoded as PNG, or None when ``value`` is not one (Pillow stays optional)."""
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow is a dependency of the server, not the SDK
        return None
    if not isinstance(value, Image.Image):
        return None
    buf = io.BytesIO()
    value.save(buf, format="PNG")
    return buf.getvalue()


def _is_file(value: str) -> bool:
    try:
        return Path(value).is_file()
    except OSError:  # e.g. a name too long for the file system
        return False


def _is_base64(value: str) -> bool:
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return False
    return len(value) >= 8


def to_url(value: MediaInput, field: str) -> str:
    """``value`` as the string the API takes for ``field`` (a URL, data URI or base64)."""
    if isinstance(value, str):
        if value.startswith(_SCHEMES):
            return value
        if len(value) < _MAX_PATH and _is_file(value):
            return to_data_uri(Path(value).read_bytes())
        if _is_base64(value):
            return value  # bare base64, as the API accepts it
        raise InvalidRequest(f"{field}: no such file {value!r} (nor a URL or data: URI)")
    if isinstance(value, os.PathLike):
        path = Path(value)
        if not path.is_file():
            raise InvalidRequest(f"{field}: no such file {str(path)!r}")
        return to_data_uri(path.read_bytes())
    if isinstance(value, bytes | bytearray):
        return to_data_uri(bytes(value))
    if hasattr(value, "read"):
        data = value.read()
        if isinstance(data, bytes):
            return to_data_uri(data)
    png = _pil_png(value)
    if png is not None:
        return to_data_uri(png)
    raise InvalidRequest(
        f"{field}: expected a URL, data: URI, path, bytes, binary file or PIL image "
        f"(got {type(value).__name__})"
    )
