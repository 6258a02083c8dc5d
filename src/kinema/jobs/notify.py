"""Wake-ups between the API, the dispatcher and the other replicas sharing the job store.

Inside one process they are asyncio events. Across processes a :class:`~kinema.jobs.relay.
Relay` carries them (PostgreSQL ``LISTEN/NOTIFY`` on the scale-out store; nothing to carry on
the embedded one): a job submitted on one replica wakes the dispatchers of all, a job finished
on one wakes the sync requests and event streams waiting for it on all, and a cancel reaches
the replica that runs the job at once. The job store stays the truth: a wake-up only says
"look now", and polling it remains the fallback, so a lost wake-up only costs latency."""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kinema.jobs.models import Job
    from kinema.jobs.relay import Relay


class Wake(enum.Enum):
    """What a wake-up from another replica says."""

    SUBMITTED = "submitted"
    """A job was queued: dispatchers look for work."""
    FINISHED = "finished"
    """A job is final: its waiters read it."""
    CANCEL = "cancel"
    """A cancel was asked for a running job: its dispatcher stops the run."""
    RESYNC = "resync"
    """Wake-ups may have been missed (the relay reconnected): everyone looks again."""


@dataclass
class Watch:
    event: asyncio.Event = field(default_factory=asyncio.Event)
    job: Job | None = None
    """The final job as announced in this process (saves the waiter a read); None when another
    replica finished it (the waiter reads the store)."""


RECENT = 256
"""Finished jobs remembered for :meth:`Notifier.recent`."""


class Notifier:
    def __init__(self, relay: Relay | None = None) -> None:
        self._finished: defaultdict[str, list[Watch]] = defaultdict(list)
        self._recent: OrderedDict[str, Job] = OrderedDict()
        self._relay = relay
        self.work_available = asyncio.Event()
        self.on_cancel: Callable[[str], None] | None = None
        """Called with a job id whose cancel was asked for here or on another replica (the
        dispatcher stops the run if it holds the job)."""

    def job_submitted(self) -> None:
        self.work_available.set()
        if self._relay is not None:
            self._relay.publish(Wake.SUBMITTED, "")

    def job_finished(self, job: Job, *, publish: bool = True) -> None:
        """``job`` is final; ``publish=False``: announced in this process only (a job answered
        before its row is settled: other replicas would find it unfinished)."""
        self._recent[job.id] = job
        if len(self._recent) > RECENT:
            self._recent.popitem(last=False)
        for watch in self._finished.get(job.id, ()):
            watch.job = job
            watch.event.set()
        if publish and self._relay is not None:
            self._relay.publish(Wake.FINISHED, job.id)

    def cancel_requested(self, job_id: str) -> None:
        if self.on_cancel is not None:
            self.on_cancel(job_id)
        if self._relay is not None:
            self._relay.publish(Wake.CANCEL, job_id)

    def deliver(self, wake: Wake, job_id: str) -> None:
        """A wake-up from another replica (the relay calls it; never published again)."""
        if wake is Wake.SUBMITTED:
            self.work_available.set()
        elif wake is Wake.FINISHED:
            for watch in self._finished.get(job_id, ()):
                watch.event.set()
        elif wake is Wake.CANCEL:
            if self.on_cancel is not None:
                self.on_cancel(job_id)
        else:
            self.work_available.set()
            for watches in self._finished.values():
                for watch in watches:
                    watch.event.set()

    def watched(self, job_id: str) -> bool:
        """Someone in this process waits for ``job_id`` to finish."""
        return job_id in self._finished

    def recent(self, job_id: str) -> Job | None:
        """The final job if this process announced it lately (a waiter that registers late)."""
        return self._recent.get(job_id)

    @contextlib.contextmanager
    def watch(self, job_id: str) -> Iterator[Watch]:
        """Set when ``job_id`` finishes. Register it *before* reading the job's state, so no
        announcement can fall in between."""
        watch = Watch()
        self._finished[job_id].append(watch)
        try:
            yield watch
        finally:
            waiters = self._finished.get(job_id)
            if waiters is not None:
                waiters.remove(watch)
                if not waiters:
                    del self._finished[job_id]
