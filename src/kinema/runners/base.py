"""The runner interface: the dispatcher hands it one job at a time per slot.

RunnerError
├── RunFailed      the generation ran and failed (bad input for the model, engine error, or a
│                  hard limit hit: run time, stall, memory, a cancel not honoured): final, the
│                  job is FAILED and refunded
├── RunCancelled   stopped at a step boundary because cancel() was called
└── RunnerLost     the worker died or could not be reached: the job is retried
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from kinema.runners.protocol import RunResult, RunTask

__all__ = [
    "Pool",
    "ProgressCallback",
    "RunCancelled",
    "RunFailed",
    "RunResult",
    "RunTask",
    "Runner",
    "RunnerError",
    "RunnerLost",
]


class RunnerError(Exception):
    pass


class RunFailed(RunnerError):
    pass


class RunCancelled(RunnerError):
    DEFAULT = "cancelled"
    """The message of a run stopped by its engine at a step; anything else says how it was
    stopped."""


class RunnerLost(RunnerError):
    pass


ProgressCallback = Callable[[float], None]
"""Called with the run's progress (0..1)."""


class Pool(Protocol):
    """Workers that run the jobs of some tasks; a job of one pool never waits for another."""

    @property
    def name(self) -> str: ...

    @property
    def tasks(self) -> frozenset[str]:
        """The engine tasks (``image-to-video``) whose jobs it runs."""

    @property
    def capacity(self) -> int:
        """How many of its jobs may run at once now."""


class Runner(Protocol):
    @property
    def pools(self) -> Sequence[Pool]: ...

    async def start(self) -> None:
        """Bring workers up and load engines; raise with a clear message if they cannot."""

    async def run(
        self, task: RunTask, on_progress: ProgressCallback, on_alive: Callable[[], None]
    ) -> RunResult:
        """Run ``task``; ``on_alive`` is called whenever the worker proves it is alive and
        working on it (the dispatcher renews the job's lease only then)."""

    async def cancel(self, job_id: str) -> None: ...

    async def close(self) -> None: ...
