"""A job's local files: where a job's inputs wait for the worker (its scratch directory, or
memory for the small inputs of a job handed straight to a local slot)."""

from __future__ import annotations

import asyncio
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kinema.jobs.models import Job, Lease, NewJob

HANDOFF_INLINE_BYTES = 256 * 1024
"""Inputs of a handed-off job up to this size go to the worker inside the job message."""


@dataclass
class Handoff:
    """A free local slot held for a sync job about to be inserted: the lease it is inserted
    under (already claimed) and where its inputs are kept until the worker has them — small
    ones in memory (they travel with the job message: a file costs a create and a write on the
    request's path, 0.1-0.3 ms on this project's VM), larger ones in the scratch directory.

    The job may be sent to the worker before its row exists (``Dispatcher.start_early``): its run
    then waits on ``admitted`` — the job as inserted, or None when the request was refused
    after all — before anything is stored or settled."""

    lease: Lease
    workdir: Path
    admitted: asyncio.Future[Job | None]
    data: dict[str, bytes] = field(default_factory=dict)
    """Inputs kept in memory, by storage key."""
    job_id: str | None = None
    """Set once the job was sent to the worker (``Dispatcher.start_early``)."""

    async def keep(self, key: str, data: bytes) -> None:
        """Keep the input stored under ``key`` for the worker (and for the storage, should the
        job have to leave this process)."""
        if len(data) <= HANDOFF_INLINE_BYTES:
            self.data[key] = data
        else:
            await asyncio.to_thread(input_path(self.workdir, key).write_bytes, data)


def empty_dir(directory: Path) -> bool:
    """Remove what ``directory`` holds; False if that failed (it is then not reused)."""
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path)
                else:
                    os.unlink(entry.path)
    except OSError:
        return False
    return True


def input_path(workdir: Path, key: str) -> Path:
    """Where the input stored under ``key`` lives in a job's scratch directory."""
    return workdir / key.replace("/", "_")


def input_keys(job: Job | NewJob) -> list[str]:
    keys: list[str] = []
    for value in job.inputs.values():
        if isinstance(value, list):
            keys.extend(value)
        elif value is not None:
            keys.append(value)
    return keys


def local_inputs(job: Job | NewJob, workdir: Path) -> dict[str, Any]:
    """The job's inputs as the worker's local file paths, keeping their names and shapes."""
    local: dict[str, Any] = {}
    for name, value in job.inputs.items():
        if isinstance(value, list):
            local[name] = [str(input_path(workdir, key)) for key in value]
        elif value is not None:
            local[name] = str(input_path(workdir, value))
    return local
