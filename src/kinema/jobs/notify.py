"""Wake-ups between the API and the dispatcher inside one process (asyncio events). Other
replicas are covered by polling the job store, so a missed wake-up only costs latency."""

from __future__ import annotations

import asyncio
from collections import defaultdict


class Notifier:
    def __init__(self) -> None:
        self._finished: defaultdict[str, list[asyncio.Event]] = defaultdict(list)
        self._changed: defaultdict[str, list[asyncio.Event]] = defaultdict(list)
        self.work_available = asyncio.Event()

    def job_submitted(self) -> None:
        self.work_available.set()

    def job_changed(self, job_id: str, *, final: bool) -> None:
        for event in self._changed.pop(job_id, []):
            event.set()
        if final:
            for event in self._finished.pop(job_id, []):
                event.set()

    async def wait_finished(self, job_id: str, timeout: float) -> None:
        """Wait until ``job_id`` is announced final or ``timeout`` passes (no error either way)."""
        await self._wait(self._finished, job_id, timeout)

    async def wait_changed(self, job_id: str, timeout: float) -> None:
        await self._wait(self._changed, job_id, timeout)

    @staticmethod
    async def _wait(
        table: defaultdict[str, list[asyncio.Event]], job_id: str, timeout: float
    ) -> None:
        event = asyncio.Event()
        table[job_id].append(event)
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            pass
        finally:
            waiters = table.get(job_id)
            if waiters and event in waiters:
                waiters.remove(event)
                if not waiters:
                    del table[job_id]
