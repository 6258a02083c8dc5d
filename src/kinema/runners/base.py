"""The runner interface: the dispatcher hands it one job at a time per slot.

RunnerError
├── RunFailed      the generation ran and failed (bad input for the model, engine error):
│                  final, the job is FAILED and refunded
├── RunCancelled   stopped at a step boundary because cancel() was called
└── RunnerLost     the worker died or could not be reached: the job is retried
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


class RunnerError(Exception):
    pass


class RunFailed(RunnerError):
    pass


class RunCancelled(RunnerError):
    pass


class RunnerLost(RunnerError):
    pass


@dataclass(frozen=True)
class RunTask:
    job_id: str
    task: str
    """``image-to-video`` or ``image-to-image``."""
    params: dict[str, Any]
    inputs: dict[str, Any]
    """Input names → local file paths (strings), or lists of them."""
    output_dir: Path
    data: dict[str, bytes] = field(default_factory=dict)
    """The contents of input files that were never written, by their path in ``inputs``
    (small inputs of a handed-off job travel with the job)."""


@dataclass(frozen=True)
class RunResult:
    output_path: Path
    content_type: str
    metadata: dict[str, Any] = field(default_factory=dict)
    inference_time: float = 0.0


ProgressCallback = Callable[[float], None]


class Runner(Protocol):
    @property
    def capacity(self) -> int:
        """How many jobs may run at once."""

    async def start(self) -> None:
        """Bring workers up and load engines; raise with a clear message if they cannot."""

    async def run(self, task: RunTask, on_progress: ProgressCallback) -> RunResult: ...

    async def cancel(self, job_id: str) -> None: ...

    async def close(self) -> None: ...
