"""Output/input storage behind one small interface: local directory (embedded) or S3-compatible."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol


class Storage(Protocol):
    async def put_file(self, key: str, src: Path, content_type: str) -> None:
        """Store ``src`` under ``key``; ``src`` may be moved (callers treat it as consumed)."""

    async def put_bytes(self, key: str, data: bytes, content_type: str) -> None: ...

    async def get_bytes(self, key: str) -> bytes: ...

    async def exists(self, key: str) -> bool: ...

    async def delete_prefix(self, prefix: str) -> None:
        """Delete every object under ``prefix`` (a job's folder)."""

    def url(self, key: str, *, base_url: str, ttl_s: int) -> str:
        """A URL a client can download ``key`` from without its API key, valid ``ttl_s``."""
