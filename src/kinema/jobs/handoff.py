"""A sync job handed straight to a free local slot: where its inputs wait for the worker."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Protocol

from kinema.jobs.models import Job, Lease, NewJob
from kinema.jobs.slots import Queue
from kinema.storage.base import Storage

HANDOFF_INLINE_BYTES = 256 * 1024
"""Inputs of a handed-off job up to this size go to the worker inside the job message."""


@dataclass
class Handoff:
    """A free local slot held for a sync job about to be inserted: the lease it is inserted
    under (already claimed) and its inputs — small ones in memory (they travel with the run: a
    file costs a create and a write on the request's path, 0.1-0.3 ms on this project's VM),
    larger ones in the storage, where every job's inputs live.

    The job may be sent to the worker before its row exists (``Dispatcher.start_early``): its run
    then waits on ``admitted`` — the job as inserted, or None when the request was refused
    after all — before anything is stored or settled."""

    lease: Lease
    storage: Storage
    admitted: asyncio.Future[Job | None]
    queue: Queue
    """The pool queue whose slot it holds."""
    data: dict[str, bytes] = field(default_factory=dict)
    """Inputs kept in memory, by storage key."""
    stored: bool = False
    """Some inputs went to the storage."""
    job_id: str | None = None
    """Set once the job was sent to the worker (``Dispatcher.start_early``)."""

    async def keep(self, key: str, data: bytes) -> None:
        """Keep the input stored under ``key`` for the worker."""
        if len(data) <= HANDOFF_INLINE_BYTES:
            self.data[key] = data
        else:
            self.stored = True
            await self.storage.put_bytes(key, data, "application/octet-stream")

    async def persist(self) -> None:
        """Move the inputs kept in memory into the storage, where a retry (by any process)
        finds them: the job has to leave this process."""
        for key, data in self.data.items():
            await self.storage.put_bytes(key, data, "application/octet-stream")
        self.stored = self.stored or bool(self.data)


class Handoffs(Protocol):
    """What the submit path may ask of this process's dispatcher: a free local slot for a sync
    job, and the job's fate once it is sent there (implemented by ``Dispatcher``)."""

    async def offer_slot(self, model: str) -> Handoff | None:
        """A held slot of ``model``'s pool, or None (none free, or older jobs wait)."""

    def start_early(self, new: NewJob, handoff: Handoff) -> None:
        """Send the job to the held slot before it is inserted."""

    def admit(self, handoff: Handoff, job: Job) -> None:
        """The job is inserted: its run may settle."""

    async def withdraw(self, handoff: Handoff) -> None:
        """The job was refused after all: free the slot, stop the run, keep nothing."""
