"""Wake-ups between the API and the dispatcher inside one process (asyncio events). Other
replicas are covered by polling the job store, so a missed wake-up only costs latency."""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kinema.jobs.models import Job


@dataclass
class Watch:
    event: asyncio.Event = field(default_factory=asyncio.Event)
    job: Job | None = None
    """The final job as announced (saves the waiter a read)."""


RECENT = 256
"""Finished jobs remembered for :meth:`Notifier.recent`."""


class Notifier:
    def __init__(self) -> None:
        self._finished: defaultdict[str, list[Watch]] = defaultdict(list)
        self._recent: OrderedDict[str, Job] = OrderedDict()
        self.work_available = asyncio.Event()

    def job_submitted(self) -> None:
        self.work_available.set()

    def job_finished(self, job: Job) -> None:
        self._recent[job.id] = job
        if len(self._recent) > RECENT:
            self._recent.popitem(last=False)
        for watch in self._finished.get(job.id, ()):
            watch.job = job
            watch.event.set()

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
