"""Wake-ups between the API and the dispatcher inside one process (asyncio events). Other
replicas are covered by polling the job store, so a missed wake-up only costs latency."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kinema.jobs.models import Job


@dataclass
class Watch:
    event: asyncio.Event = field(default_factory=asyncio.Event)
    job: Job | None = None
    """The job as announced (saves the waiter a read), when the announcer had it."""


class Notifier:
    def __init__(self) -> None:
        self._finished: defaultdict[str, list[Watch]] = defaultdict(list)
        self._changed: defaultdict[str, list[Watch]] = defaultdict(list)
        self.work_available = asyncio.Event()

    def job_submitted(self) -> None:
        self.work_available.set()

    def job_changed(self, job_id: str, *, final: bool, job: Job | None = None) -> None:
        tables = (self._changed, self._finished) if final else (self._changed,)
        for table in tables:
            for watch in table.get(job_id, ()):
                watch.job = job
                watch.event.set()

    @contextlib.contextmanager
    def watch(self, job_id: str, *, final_only: bool = True) -> Iterator[Watch]:
        """Set when ``job_id`` finishes (or, with ``final_only=False``, changes). Register it
        *before* reading the job's state, so no announcement can fall in between."""
        table = self._finished if final_only else self._changed
        watch = Watch()
        table[job_id].append(watch)
        try:
            yield watch
        finally:
            waiters = table.get(job_id)
            if waiters is not None:
                waiters.remove(watch)
                if not waiters:
                    del table[job_id]
