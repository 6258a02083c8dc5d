"""Signed, expiring download URLs for files the API serves itself (a presigned URL's twin)."""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from urllib.parse import quote, urlencode


def sign(secret: bytes, key: str, expires: int) -> str:
    msg = f"{key}\n{expires}".encode()
    return hmac.new(secret, msg, hashlib.sha256).hexdigest()


def signed_url(secret: bytes, base_url: str, key: str, ttl_s: int) -> str:
    """A URL valid for at least ``ttl_s`` seconds (``expires`` is whole seconds, rounded up:
    rounded down, a URL made late in a second lost up to a second of its life)."""
    expires = math.ceil(time.time() + ttl_s)
    query = urlencode({"expires": expires, "signature": sign(secret, key, expires)})
    return f"{base_url.rstrip('/')}/v1/files/{quote(key)}?{query}"


def verify(secret: bytes, key: str, expires: int, signature: str, now: float | None = None) -> bool:
    if expires < (now if now is not None else time.time()):
        return False
    # As bytes: compare_digest refuses str with non-ASCII characters (a TypeError, not False).
    return hmac.compare_digest(sign(secret, key, expires).encode(), signature.encode())
