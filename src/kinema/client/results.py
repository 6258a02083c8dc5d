"""What a finished request gives back: a :class:`Result` with its metrics and an output to
``read()`` or ``save()`` (downloaded on demand from the signed URL, without the key)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["AsyncOutput", "AsyncResult", "DownloadProgress", "Output", "Result"]

DownloadProgress = Callable[[int, int | None], None]
"""Called as a download goes: (bytes so far, total bytes or None when the server did not say)."""


class Output:
    """A generated file at ``url``; nothing is downloaded until it is read or saved."""

    def __init__(self, url: str, open_stream: Callable[[str], Iterator[tuple[int | None, bytes]]]):
        self.url = url
        self._open = open_stream
        self._data: bytes | None = None

    def iter_bytes(self, on_progress: DownloadProgress | None = None) -> Iterator[bytes]:
        """The file in chunks, as they arrive."""
        done = 0
        for total, chunk in self._open(self.url):
            done += len(chunk)
            if on_progress is not None:
                on_progress(done, total)
            yield chunk

    def read(self, on_progress: DownloadProgress | None = None) -> bytes:
        """The whole file (downloaded once, then kept)."""
        if self._data is None:
            self._data = b"".join(self.iter_bytes(on_progress))
        return self._data

    def save(
        self, path: str | os.PathLike[str], on_progress: DownloadProgress | None = None
    ) -> Path:
        """Write the file to ``path`` (streamed, through a temporary name); returns the path."""
        target = Path(path)
        partial = target.with_name(target.name + ".part")
        with partial.open("wb") as out:
            if self._data is not None:
                out.write(self._data)
            else:
                for chunk in self.iter_bytes(on_progress):
                    out.write(chunk)
        partial.replace(target)
        return target

    def __repr__(self) -> str:
        return f"Output({self.url!r})"


class AsyncOutput:
    """:class:`Output` for :class:`~kinema.client.AsyncClient`: ``await read()`` / ``save()``."""

    def __init__(
        self, url: str, open_stream: Callable[[str], AsyncIterator[tuple[int | None, bytes]]]
    ):
        self.url = url
        self._open = open_stream
        self._data: bytes | None = None

    async def iter_bytes(self, on_progress: DownloadProgress | None = None) -> AsyncIterator[bytes]:
        """The file in chunks, as they arrive."""
        done = 0
        async for total, chunk in self._open(self.url):
            done += len(chunk)
            if on_progress is not None:
                on_progress(done, total)
            yield chunk

    async def read(self, on_progress: DownloadProgress | None = None) -> bytes:
        """The whole file (downloaded once, then kept)."""
        if self._data is None:
            self._data = b"".join([c async for c in self.iter_bytes(on_progress)])
        return self._data

    async def save(
        self, path: str | os.PathLike[str], on_progress: DownloadProgress | None = None
    ) -> Path:
        """Write the file to ``path`` (through a temporary name); returns the path."""
        target = Path(path)
        partial = target.with_name(target.name + ".part")
        with partial.open("wb") as out:
            if self._data is not None:
                out.write(self._data)
            else:
                async for chunk in self.iter_bytes(on_progress):
                    out.write(chunk)
        partial.replace(target)
        return target

    def __repr__(self) -> str:
        return f"AsyncOutput({self.url!r})"


def _missing(request_id: str, status: str) -> ValueError:
    return ValueError(f"request {request_id} has no output (status {status})")


@dataclass(frozen=True)
class Result:
    """A request's result URL body: ``output`` is set once COMPLETED.

    ``metrics`` holds ``inference_time``, ``queue_time``, ``total_time``, ``cost`` and
    ``remaining_credits``; ``raw`` the whole body as the server sent it.
    """

    request_id: str
    status: str
    output: Output | None
    metrics: Mapping[str, Any] = field(default_factory=dict)
    raw: Mapping[str, Any] = field(default_factory=dict)

    def read(self, on_progress: DownloadProgress | None = None) -> bytes:
        """Shortcut for ``output.read()``."""
        if self.output is None:
            raise _missing(self.request_id, self.status)
        return self.output.read(on_progress)

    def save(
        self, path: str | os.PathLike[str], on_progress: DownloadProgress | None = None
    ) -> Path:
        """Shortcut for ``output.save(path)``."""
        if self.output is None:
            raise _missing(self.request_id, self.status)
        return self.output.save(path, on_progress)


@dataclass(frozen=True)
class AsyncResult:
    """:class:`Result` for :class:`~kinema.client.AsyncClient`: ``await read()`` / ``save()``."""

    request_id: str
    status: str
    output: AsyncOutput | None
    metrics: Mapping[str, Any] = field(default_factory=dict)
    raw: Mapping[str, Any] = field(default_factory=dict)

    async def read(self, on_progress: DownloadProgress | None = None) -> bytes:
        """Shortcut for ``await output.read()``."""
        if self.output is None:
            raise _missing(self.request_id, self.status)
        return await self.output.read(on_progress)

    async def save(
        self, path: str | os.PathLike[str], on_progress: DownloadProgress | None = None
    ) -> Path:
        """Shortcut for ``await output.save(path)``."""
        if self.output is None:
            raise _missing(self.request_id, self.status)
        return await self.output.save(path, on_progress)
