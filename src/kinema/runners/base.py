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
from dataclasses import dataclass
from typing import Protocol

from kinema.runners.protocol import Phase, PhaseChanged, Progress, RunResult, RunTask

__all__ = [
    "NOT_STARTED",
    "Phase",
    "Pool",
    "ProgressCallback",
    "RunCancelled",
    "RunFailed",
    "RunProgress",
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


@dataclass(frozen=True)
class RunProgress:
    """Where a run is: its overall progress (0..1, reaching 1 only once the output is stored),
    the phase it is in, and how far into that phase (when the worker can tell)."""

    value: float
    phase: Phase | None = None
    phase_progress: float | None = None

    def after(self, event: Progress | PhaseChanged) -> RunProgress:
        """The progress once the worker's ``event`` is heard: a new phase starts at 0."""
        if isinstance(event, PhaseChanged):
            return RunProgress(self.value, event.phase, 0.0)
        return RunProgress(event.value, self.phase, event.phase_progress)


NOT_STARTED = RunProgress(0.0)


ProgressCallback = Callable[[RunProgress], None]
"""Called whenever the run's progress or phase changes."""


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
