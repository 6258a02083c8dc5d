"""The storage as a worker sees it: blocking reads of inputs and writes of outputs by storage
key, from whatever machine the worker runs on. The API side's :class:`~kinema.storage.base.
Storage` and this view name the same objects by the same keys.

A worker builds its outputs in a local scratch file (:meth:`Blobs.scratch`) and stores it whole
(:meth:`Blobs.put_file`): a reader never sees half an output, and a run that fails leaves none.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Protocol

from kinema.storage.paths import key_path
from kinema.storage.target import S3_EXTRA, S3Target, StorageTarget

PARTIAL_DIR = ".partial"
"""Scratch files under the local storage's root (same filesystem: stored by a rename)."""


class InputMissing(Exception):
    """An input the job names is not in the storage."""


class Blobs(Protocol):
    def open(self, key: str) -> BinaryIO:
        """The object stored under ``key``; raises :class:`InputMissing`."""

    def scratch(self, suffix: str) -> Path:
        """A new, empty local file for building an output."""

    def put_file(self, key: str, src: Path) -> None:
        """Store ``src`` (a scratch file, consumed) under ``key``."""

    def put_bytes(self, key: str, data: bytes) -> None: ...


class LocalBlobs:
    """The local storage's directory, read and written in place."""

    def __init__(self, root: Path) -> None:
        self._root = str(root.resolve())
        self._partial = Path(self._root) / PARTIAL_DIR
        self._partial.mkdir(parents=True, exist_ok=True)

    def open(self, key: str) -> BinaryIO:
        try:
            return key_path(self._root, key).open("rb")
        except (FileNotFoundError, LookupError):
            raise InputMissing(key) from None

    def scratch(self, suffix: str) -> Path:
        fd, name = tempfile.mkstemp(suffix=suffix, dir=self._partial)
        os.close(fd)
        return Path(name)

    def put_file(self, key: str, src: Path) -> None:
        dest = key_path(self._root, key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(src, dest)
        finally:
            with contextlib.suppress(FileNotFoundError):
                src.unlink()

    def put_bytes(self, key: str, data: bytes) -> None:
        tmp = self.scratch(".tmp")
        tmp.write_bytes(data)
        self.put_file(key, tmp)


def open_blobs(target: StorageTarget) -> Blobs:
    """The worker's view of the configured storage."""
    if isinstance(target, S3Target):
        try:
            # Imported here: the S3 client is an optional extra that local storage does not need.
            from kinema.storage.s3 import S3Blobs, S3Location
        except ModuleNotFoundError as exc:
            if exc.name != "obstore":
                raise
            raise RuntimeError(S3_EXTRA) from exc
        return S3Blobs(S3Location.from_target(target))
    return LocalBlobs(Path(target.root))
