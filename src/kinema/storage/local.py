"""Local-directory storage; the API serves the files through signed URLs (storage/routes.py)."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

from kinema.errors import NotFound
from kinema.storage.paths import key_path
from kinema.storage.signing import signed_url

_GONE = "the file is not stored (it may have expired)"

INLINE_BYTES = 256 * 1024
"""Reads and writes up to this size go to the page cache on the event loop: cheaper than waking
a thread (which costs 1-2 ms on a loaded small VM); larger ones go to a thread."""


class LocalStorage:
    def __init__(self, root: Path, secret: bytes) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._root = str(self.root)
        self._secret = secret

    def path(self, key: str) -> Path:
        """The file behind ``key``; refuses keys that would escape the root."""
        try:
            return key_path(self._root, key)
        except LookupError:
            raise NotFound(_GONE) from None

    async def put_file(self, key: str, src: Path, content_type: str) -> None:
        dest = self.path(key)
        if not self._move_atomic(src, dest):  # same filesystem: a rename, done inline
            await asyncio.to_thread(self._copy_atomic, src, dest)

    async def put_bytes(self, key: str, data: bytes, content_type: str) -> None:
        if len(data) <= INLINE_BYTES:
            self._write_atomic(data, self.path(key))
        else:
            await asyncio.to_thread(self._write_atomic, data, self.path(key))

    async def get_bytes(self, key: str) -> bytes:
        path = self.path(key)
        try:
            if path.stat().st_size <= INLINE_BYTES:
                return path.read_bytes()
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            raise NotFound(_GONE) from None

    async def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    async def delete_prefix(self, prefix: str) -> None:
        target = self.path(prefix)
        if target.is_dir():
            if _small_flat_dir(target):  # a job's inputs or output: a few unlinks, inline
                shutil.rmtree(target, ignore_errors=True)
            else:
                await asyncio.to_thread(shutil.rmtree, target, True)
        elif target.exists():
            target.unlink(missing_ok=True)

    def url(self, key: str, *, base_url: str, ttl_s: int) -> str:
        return signed_url(self._secret, base_url, key, ttl_s)

    @staticmethod
    def _move_atomic(src: Path, dest: Path) -> bool:
        """Rename ``src`` into place; False when it is on another filesystem."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(src, dest)
        except OSError:
            return False
        return True

    @staticmethod
    def _copy_atomic(src: Path, dest: Path) -> None:
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)

    @staticmethod
    def _write_atomic(data: bytes, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, dest)


def _small_flat_dir(path: Path, limit: int = 16) -> bool:
    with os.scandir(path) as entries:
        for n, entry in enumerate(entries):
            if n >= limit or entry.is_dir(follow_symlinks=False):
                return False
    return True
