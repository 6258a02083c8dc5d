"""One replica of a pool's Ray Serve deployment: the worker process's job, as a Serve class.

Its constructor loads the pool's engines (a replica started from zero does that for the run
waiting on it); :meth:`Replica.run` streams one run as protocol lines (:func:`~kinema.runners.
protocol.encode`): :class:`~kinema.runners.protocol.Started` first, then progress, phases and a
heartbeat every ``heartbeat_s``, then exactly one outcome. Engines run in a thread, one run at
a time; the event loop only streams.

A caller that gives a run up (a cancel, a limit, a shutdown) cancels its Serve request: the
engine is told to stop at its next progress report, and the next run on this replica waits
until it has. One that does not stop within ``cancel_grace_s`` makes :meth:`check_health` fail,
and Serve replaces the replica (as the local runner kills a worker).

No Ray import here: the API process refers to :class:`Replica` to deploy it, and Serve wraps it
there. Engines (torch) are imported in the constructor, on the cluster only.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

from kinema.engines.base import Engine, Task
from kinema.runners.protocol import (
    Cancelled,
    Done,
    Failed,
    Heartbeat,
    PhaseChanged,
    Progress,
    RunTask,
    Started,
    WorkerConfig,
    encode,
)
from kinema.storage.blobs import Blobs

Outcome = Done | Failed | Cancelled


class ReplicaConfig(BaseModel):
    """What a replica is deployed with (as JSON: the Serve application's one argument)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    worker: WorkerConfig
    cancel_grace_s: float = Field(30.0, gt=0)


@dataclass
class _Run:
    task: RunTask
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue[Started | Progress | PhaseChanged | Outcome] = field(
        default_factory=asyncio.Queue
    )
    steps: int = 0
    stop: threading.Event = field(default_factory=threading.Event)
    """Set when the caller gave the run up: the engine stops at its next progress report."""

    def post(self, event: Progress | PhaseChanged | Outcome) -> None:
        """From the engine thread."""
        self.loop.call_soon_threadsafe(self.events.put_nowait, event)


class Replica:
    """A pool's engines, loaded once, running one job at a time."""

    def __init__(self, config: str) -> None:
        begun = time.monotonic()
        # Engines import torch: only ever on the cluster's side.
        from kinema.runners.worker import load_all
        from kinema.storage.blobs import open_blobs

        self._config = ReplicaConfig.model_validate_json(config)
        self._engines: dict[Task, Engine]
        self._engines, self._speech = load_all(self._config.worker)
        self._blobs: Blobs = open_blobs(self._config.worker.storage)
        self._load_s = time.monotonic() - begun
        self._runs = 0
        self._engine: asyncio.Future[None] | None = None
        """The engine thread of the latest run, until it has returned."""
        self._stop_asked: float | None = None
        """When the latest run was given up while its engine still ran (monotonic)."""

    async def run(self, task_json: str) -> AsyncIterator[bytes]:
        """Stream the run of one :class:`RunTask` (its JSON) as protocol lines."""
        task = RunTask.model_validate_json(task_json)
        cold = self._runs == 0
        self._runs += 1
        yield encode(Started(job_id=task.job_id, cold=cold, load_s=self._load_s if cold else 0))
        beat = self._config.worker.heartbeat_s
        while self._engine is not None and not self._engine.done():
            # A run given up a moment ago is still stopping: never two engines at once.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._engine), beat)
            yield encode(Heartbeat(job_id=task.job_id, steps=0))
        loop = asyncio.get_running_loop()
        run = _Run(task, loop)
        self._stop_asked = None
        engine = self._engine = loop.run_in_executor(None, self._execute, run)
        try:
            while True:
                try:
                    event = await asyncio.wait_for(run.events.get(), beat)
                except TimeoutError:
                    yield encode(Heartbeat(job_id=task.job_id, steps=run.steps))
                    continue
                yield encode(event)
                if isinstance(event, Done | Failed | Cancelled):
                    return
        finally:
            if not engine.done():  # given up by the caller (Serve cancelled the request)
                run.stop.set()
                self._stop_asked = time.monotonic()

    def _execute(self, run: _Run) -> None:
        """The engine thread: one run, to its outcome."""
        from kinema.runners.worker import Reporter, run_job

        def counted() -> None:
            run.steps += 1

        reporter = Reporter(run.task.job_id, run.post, run.stop.is_set, counted)
        encoder = self._config.worker.encoder
        speech = self._speech
        run.post(run_job(self._engines, run.task, self._blobs, reporter, encoder, speech))

    def check_health(self) -> None:
        """Serve's periodic health check: a run given up but still running past its grace
        period fails it, and Serve replaces this replica."""
        asked, engine = self._stop_asked, self._engine
        grace = self._config.cancel_grace_s
        if asked is None or engine is None or engine.done():
            return
        if time.monotonic() - asked > grace:
            raise RuntimeError(f"a cancelled run did not stop within {grace:g} s")
