"""API keys: prefixed, high-entropy, stored only as HMAC-SHA256 hashes."""

from __future__ import annotations

import hashlib
import hmac
import secrets

KEY_PREFIX = "kin_"
DISPLAY_CHARS = 12


def generate_key() -> str:
    """A new key: ``kin_`` + 43 url-safe characters (256 bits of entropy)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str, secret: bytes) -> str:
    return hmac.new(secret, key.encode(), hashlib.sha256).hexdigest()


def display_prefix(key: str) -> str:
    """What listings show of a key: enough to recognise it, useless to an attacker."""
    return key[:DISPLAY_CHARS]


MICROS = 1_000_000


def to_micros(credits: float) -> int:
    return round(credits * MICROS)


def from_micros(micros: int) -> float:
    return micros / MICROS
