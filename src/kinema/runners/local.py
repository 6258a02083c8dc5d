"""The embedded runner: pools of worker processes on this machine (:mod:`kinema.runners.process`),
one job at a time each; a job takes whichever worker of its pool is idle, and a worker lost or
killed by a hard end is restarted for the next job.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from kinema.engines.base import Task
from kinema.runners.base import (
    ProgressCallback,
    RunFailed,
    RunnerLost,
    RunResult,
    RunTask,
)
from kinema.runners.process import RunLimits, WorkerProcess
from kinema.runners.protocol import WorkerConfig

__all__ = ["ALL_TASKS", "LocalPool", "LocalRunner", "RunLimits", "WorkerProcess"]

log = logging.getLogger(__name__)

ALL_TASKS = frozenset(task.value for task in Task)
RESTART_BACKOFF_S = (1.0, 5.0, 30.0, 120.0, 600.0, 600.0, 600.0)
"""Waits before the later tries to restart a worker that failed to start (about half an hour
in all); a worker still broken then stays out until the process restarts."""


class LocalPool:
    """Workers that serve the same tasks; a job takes whichever is idle."""

    def __init__(self, name: str, tasks: frozenset[str], workers: list[WorkerProcess]) -> None:
        self.name = name
        self.tasks = tasks
        self._workers = workers
        self._idle: asyncio.Queue[WorkerProcess] = asyncio.Queue()
        self._restarting: set[asyncio.Task[None]] = set()
        self._broken: set[WorkerProcess] = set()
        """Workers whose restart failed: out of the pool until a later try brings them back."""

    @property
    def capacity(self) -> int:
        """Jobs it can run at once now: its workers, less those that cannot be restarted (one
        being restarted after a loss is back in seconds and counts)."""
        return len(self._workers) - len(self._broken)

    @property
    def workers(self) -> list[WorkerProcess]:
        return list(self._workers)

    @property
    def restarts(self) -> int:
        """Times its workers were lost or killed and brought back (``kinema_worker_restarts``)."""
        return sum(worker.restarts for worker in self._workers)

    async def start(self) -> None:
        await asyncio.gather(*(w.start() for w in self._workers))
        for worker in self._workers:
            self._idle.put_nowait(worker)

    async def run(
        self, task: RunTask, on_progress: ProgressCallback, on_alive: Callable[[], None]
    ) -> RunResult:
        worker = await self._idle.get()
        try:
            if not worker.alive:  # gone while idle: bring it back for this job
                await worker.close()
                await worker.start()
            return await worker.run(task, on_progress, on_alive)
        finally:
            if worker.alive:
                self._idle.put_nowait(worker)
            else:  # lost or killed: restarted now, not on the next job's path
                worker.restarts += 1
                self._restarting.add(asyncio.create_task(self._restart(worker)))

    async def _restart(self, worker: WorkerProcess) -> None:
        """Bring a lost worker back; one that cannot start leaves the pool's capacity and is
        tried again after a growing wait (``RESTART_BACKOFF_S``)."""
        try:
            for wait in (0.0, *RESTART_BACKOFF_S):
                await asyncio.sleep(wait)
                try:
                    await worker.close()
                    await worker.start()
                except RunnerLost as exc:
                    self._broken.add(worker)
                    log.error("%s could not be restarted: %s", worker.name, exc)
                    continue
                self._broken.discard(worker)
                self._idle.put_nowait(worker)
                return
            log.error("%s stays out of the pool: every restart failed", worker.name)
        finally:
            task = asyncio.current_task()
            if task is not None:
                self._restarting.discard(task)

    async def cancel(self, job_id: str) -> None:
        for worker in self._workers:
            if worker.has(job_id):
                await worker.cancel(job_id)

    async def close(self) -> None:
        for task in list(self._restarting):
            task.cancel()
        await asyncio.gather(*self._restarting, return_exceptions=True)
        await asyncio.gather(*(w.close() for w in self._workers))


class LocalRunner:
    """Worker pools on this machine, one per task (or one for every task)."""

    def __init__(self, pools: Sequence[LocalPool]) -> None:
        self._pools = list(pools)
        self._by_task = {task: pool for pool in reversed(self._pools) for task in pool.tasks}

    @classmethod
    def single(
        cls,
        config: WorkerConfig,
        *,
        workers: int = 1,
        limits: RunLimits | None = None,
        startup_timeout_s: float = 600.0,
    ) -> LocalRunner:
        """One pool of ``workers`` that each load every preset of ``config`` and run any job."""
        procs = [
            WorkerProcess(
                config, limits=limits, startup_timeout_s=startup_timeout_s, name=f"worker {n}"
            )
            for n in range(workers)
        ]
        return cls([LocalPool("all", ALL_TASKS, procs)])

    @property
    def pools(self) -> list[LocalPool]:
        return list(self._pools)

    @property
    def capacity(self) -> int:
        return sum(pool.capacity for pool in self._pools)

    @property
    def workers(self) -> list[WorkerProcess]:
        return [worker for pool in self._pools for worker in pool.workers]

    async def start(self) -> None:
        started: list[LocalPool] = []
        try:
            for pool in self._pools:
                await pool.start()
                started.append(pool)
        except BaseException:
            await asyncio.gather(*(pool.close() for pool in started), return_exceptions=True)
            raise

    async def run(
        self,
        task: RunTask,
        on_progress: ProgressCallback,
        on_alive: Callable[[], None] = lambda: None,
    ) -> RunResult:
        pool = self._by_task.get(task.spec.task)
        if pool is None:
            raise RunFailed(f"no worker pool here serves {task.spec.task}")
        return await pool.run(task, on_progress, on_alive)

    async def cancel(self, job_id: str) -> None:
        for pool in self._pools:
            await pool.cancel(job_id)

    async def close(self) -> None:
        await asyncio.gather(*(pool.close() for pool in self._pools))
