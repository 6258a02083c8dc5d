"""The leases a dispatcher holds: renewed together, about once a second, in one transaction,
with each job's latest progress; cancel requests (made through any replica, hence read from the
store) are picked up on the way. A running job's lease is renewed only while its runner proves
the run alive (the runner's own limits end a run that stops doing so)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from sqlalchemy import Connection

from kinema.jobs import repository as repo
from kinema.runners.base import NOT_STARTED, RunProgress
from kinema.store.db import Database

log = logging.getLogger(__name__)


@dataclass
class Held:
    """A job a dispatcher holds: its latest progress (with its phase), the last one
    published, and when its runner last proved it alive."""

    job_id: str
    handed_off: bool = False
    """Sent straight from a sync request to this process's worker (not claimed from the queue)."""
    progress: RunProgress = NOT_STARTED
    sent: RunProgress | None = None
    seen: float = field(default_factory=time.monotonic)

    def report(self, progress: RunProgress) -> None:
        self.progress = progress

    def alive(self) -> None:
        self.seen = time.monotonic()


class Leases:
    def __init__(
        self,
        db: Database,
        owner: str,
        lease_s: float,
        *,
        running: Callable[[str], bool],
        cancel: Callable[[str], Awaitable[None]],
    ) -> None:
        """``running``: whether a job is with its runner now; ``cancel``: stop a job's run."""
        self._db = db
        self._owner = owner
        self._lease_s = lease_s
        self._running = running
        self._cancel = cancel
        self.held: dict[str, Held] = {}
        """Jobs whose lease is renewed: from launch (or insert) until settled."""
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._forever(), name="kinema-lease-renewal")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def hold(self, held: Held) -> None:
        self.held[held.job_id] = held

    def release(self, held: Held) -> None:
        if self.held.get(held.job_id) is held:
            del self.held[held.job_id]

    async def _forever(self) -> None:
        tick = min(1.0, self._lease_s / 3)
        while True:
            await asyncio.sleep(tick)
            try:
                await self.renew()
            except Exception:
                log.exception("lease renewal failed")

    async def renew(self) -> None:
        now = time.monotonic()
        due = [
            entry
            for entry in self.held.values()
            if not self._running(entry.job_id) or now - entry.seen < self._lease_s
        ]
        if not due:
            return
        until = time.time() + self._lease_s

        def tx(conn: Connection) -> list[tuple[Held, RunProgress, bool | None]]:
            renewed = []
            for entry in due:
                value = entry.progress
                fresh = value if value != entry.sent else None
                cancel = repo.renew_lease(
                    conn, entry.job_id, self._owner, until=until, progress=fresh
                )
                renewed.append((entry, value, cancel))
            return renewed

        for entry, value, cancel in await self._db.write(tx):
            entry.sent = value
            if cancel:
                await self._cancel(entry.job_id)
