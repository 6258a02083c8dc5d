"""One engine worker process on this machine, and the hard ends of its runs.

The API process stays free of torch: each worker is a child process (``kinema.runners.worker``)
that loads its engines once and runs one job at a time. A worker that dies fails its job with
:class:`RunnerLost` (the dispatcher retries it) and is restarted for the next job.

Hard ends (:class:`RunLimits`), checked by a timer while a run is in flight: a run longer than
its run time, a worker that stops sending heartbeats, a run whose progress count stops moving
(stalled), a worker over its memory limit, and a cancel not honoured within its grace period.
Each kills the worker process (it is restarted) and ends the run with a message naming the
limit: :class:`RunFailed` (final, refunded — running it again would hit the same limit), or
:class:`RunCancelled` for the cancel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from pydantic import ValidationError

from kinema.runners.base import (
    NOT_STARTED,
    ProgressCallback,
    RunCancelled,
    RunFailed,
    RunnerError,
    RunnerLost,
    RunProgress,
    RunResult,
    RunTask,
)
from kinema.runners.protocol import (
    Cancel,
    Cancelled,
    Done,
    Failed,
    Fatal,
    Heartbeat,
    PhaseChanged,
    Progress,
    Ready,
    Run,
    WorkerConfig,
    decode_event,
    encode,
)

log = logging.getLogger(__name__)

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@dataclass(frozen=True)
class RunLimits:
    """The hard ends of one run (settings ``jobs.*``, per pool)."""

    run_timeout_s: float = 3600.0
    stall_timeout_s: float = 600.0
    """No progress report for this long: the run is stalled."""
    cancel_grace_s: float = 30.0
    """A cancel not honoured within this long kills the worker."""
    heartbeat_timeout_s: float = 30.0
    """No message at all from a running worker for this long: it is frozen."""
    max_rss_mb: float | None = None
    """A worker using more memory than this (resident set) is killed; None: no limit."""
    run_timeout_overrides: Mapping[str, float] = field(default_factory=dict)
    """``run_timeout_s`` by engine preset."""

    def run_timeout(self, preset: str | None) -> float:
        if preset is None:
            return self.run_timeout_s
        return self.run_timeout_overrides.get(preset, self.run_timeout_s)

    @property
    def tick_s(self) -> float:
        """How often a running job is checked."""
        return max(0.05, min(1.0, self.stall_timeout_s / 4, self.heartbeat_timeout_s / 4))


@dataclass
class _Run:
    future: asyncio.Future[RunResult]
    on_progress: ProgressCallback
    on_alive: Callable[[], None]
    deadline: float
    """Monotonic time by which the run must end."""
    limit_s: float
    """Its run time limit."""
    seen: float
    """Last message from the worker about this run (monotonic)."""
    moved: float
    """Last time its progress count moved."""
    steps: int = 0
    progress: RunProgress = NOT_STARTED
    """The latest progress heard, with its phase."""
    cancel_at: float | None = None
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)
    ended_by: RunnerError | None = None
    """The limit that killed its worker."""


class WorkerProcess:
    """One worker process and the runs it has in flight (one at a time)."""

    def __init__(
        self,
        config: WorkerConfig,
        *,
        limits: RunLimits | None = None,
        startup_timeout_s: float = 600.0,
        env: Mapping[str, str] | None = None,
        name: str = "worker",
    ) -> None:
        self._config = config.model_dump_json()
        self._limits = limits or RunLimits()
        self._startup_timeout = startup_timeout_s
        self._env = dict(env or {})
        self.name = name
        self.restarts = 0
        """Times it was lost or killed and brought back."""
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._runs: dict[str, _Run] = {}
        self._closed_stream = False
        """The worker's stdout ended: it is gone even if it has not been reaped yet."""

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.returncode is None and not self._closed_stream

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    async def start(self) -> None:
        self._closed_stream = False
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "kinema.runners.worker",
            self._config,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=1 << 24,
            env={**os.environ, **self._env},
        )
        assert self._proc.stdout is not None
        try:
            first = await asyncio.wait_for(
                self._read_event(self._proc.stdout), self._startup_timeout
            )
        except TimeoutError:
            await self.close()
            raise RunnerLost(
                f"{self.name}: did not load its engines within {self._startup_timeout} s"
            ) from None
        if not isinstance(first, Ready):
            await self.close()
            reason = first.error if isinstance(first, Fatal) else "it exited during start-up"
            raise RunnerLost(f"{self.name}: {reason}")
        self._reader = asyncio.create_task(self._read_loop(self._proc.stdout))

    @staticmethod
    async def _read_event(stream: asyncio.StreamReader) -> object | None:
        line = await stream.readline()
        if not line:
            return None
        try:
            return decode_event(line)
        except ValidationError:
            log.error("worker sent a line that is not a protocol message: %.200r", line)
            return Fatal(error="the worker sent a malformed message")

    async def _read_loop(self, stream: asyncio.StreamReader) -> None:
        try:
            while (event := await self._read_event(stream)) is not None:
                if isinstance(event, Fatal):
                    break
                self._dispatch(event)
        finally:
            self._closed_stream = True
            for job_id, run in list(self._runs.items()):
                self._end(job_id, run.ended_by or RunnerLost("the worker process exited"))
            self._kill()

    def _dispatch(self, event: object) -> None:
        if not isinstance(event, Progress | PhaseChanged | Heartbeat | Done | Failed | Cancelled):
            return
        run = self._runs.get(event.job_id)
        if run is None:  # a late event for a run that has ended
            return
        now = time.monotonic()
        run.seen = now
        run.on_alive()
        if isinstance(event, Progress | PhaseChanged):
            run.moved = now  # a phase begun is progress too
            run.progress = run.progress.after(event)
            run.on_progress(run.progress)
        elif isinstance(event, Heartbeat):
            if event.steps != run.steps:
                run.steps, run.moved = event.steps, now
        elif isinstance(event, Done):
            self._end(event.job_id, event.result)
        elif isinstance(event, Failed):
            self._end(event.job_id, RunFailed(event.error))
        else:
            self._end(event.job_id, RunCancelled(RunCancelled.DEFAULT))

    def _forget(self, job_id: str) -> _Run | None:
        """Take a run out of the book, its limit checks stopped."""
        run = self._runs.pop(job_id, None)
        if run is not None and run.timer is not None:
            run.timer.cancel()
        return run

    def _end(self, job_id: str, outcome: RunResult | RunnerError) -> None:
        run = self._forget(job_id)
        if run is None or run.future.done():
            return
        if isinstance(outcome, RunResult):
            run.future.set_result(outcome)
        else:
            run.future.set_exception(outcome)

    async def _send(self, message: Run | Cancel) -> None:
        if not self.alive:
            raise RunnerLost("the worker process is not running")
        assert self._proc is not None and self._proc.stdin is not None
        try:
            self._proc.stdin.write(encode(message))
            await self._proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise RunnerLost("the worker process is not reachable") from exc

    async def run(
        self,
        task: RunTask,
        on_progress: ProgressCallback,
        on_alive: Callable[[], None] = lambda: None,
    ) -> RunResult:
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        limit = self._limits.run_timeout(task.spec.preset)
        deadline = now + limit
        if task.deadline is not None:
            deadline = min(deadline, now + task.deadline - time.time())
        run = _Run(
            loop.create_future(), on_progress, on_alive, deadline, limit, seen=now, moved=now
        )
        self._runs[task.job_id] = run
        run.timer = loop.call_later(self._limits.tick_s, self._check, task.job_id)
        try:
            await self._send(Run(task=task))
            return await run.future
        except asyncio.CancelledError:
            # The caller gave the job up (shutdown): stop the worker's work on it too.
            if self.alive:
                with contextlib.suppress(RunnerLost):
                    await self._send(Cancel(job_id=task.job_id))
            raise
        finally:
            if self._runs.get(task.job_id) is run:  # never sent, or given up: forget it
                self._forget(task.job_id)
                run.future.cancel()

    def _check(self, job_id: str) -> None:
        """A run's limits, every ``tick_s`` while it is in flight."""
        run = self._runs.get(job_id)
        if run is None:
            return
        limits, now = self._limits, time.monotonic()
        reason: RunnerError | None = None
        if run.cancel_at is not None and now - run.cancel_at > limits.cancel_grace_s:
            reason = RunCancelled(
                f"the engine did not stop within {limits.cancel_grace_s:g} s; "
                "its worker was restarted"
            )
        elif now > run.deadline:
            reason = RunFailed(
                f"the run exceeded its time limit ({run.limit_s:g} s); its worker was restarted"
            )
        elif now - run.seen > limits.heartbeat_timeout_s:
            reason = RunFailed(
                f"the worker stopped answering (no heartbeat for "
                f"{limits.heartbeat_timeout_s:g} s); it was restarted"
            )
        elif now - run.moved > limits.stall_timeout_s:
            reason = RunFailed(
                f"the run stalled (no progress for {limits.stall_timeout_s:g} s); "
                "its worker was restarted"
            )
        elif limits.max_rss_mb is not None:
            used = self.rss_mb()
            if used is not None and used > limits.max_rss_mb:
                reason = RunFailed(
                    f"the worker used {used:.0f} MB of memory, over its limit of "
                    f"{limits.max_rss_mb:g} MB; it was restarted"
                )
        if reason is None:
            run.timer = asyncio.get_running_loop().call_later(limits.tick_s, self._check, job_id)
            return
        log.warning("%s: job %s: %s", self.name, job_id, reason)
        run.ended_by = reason
        self._kill()

    def rss_mb(self) -> float | None:
        """The worker's resident memory (Linux; None elsewhere or when it is gone)."""
        if self._proc is None:
            return None
        try:
            with open(f"/proc/{self._proc.pid}/statm", "rb") as f:
                return int(f.read().split()[1]) * _PAGE / 1e6
        except (OSError, ValueError, IndexError):
            return None

    def _kill(self) -> None:
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()

    async def cancel(self, job_id: str) -> None:
        run = self._runs.get(job_id)
        if run is None:
            return
        if run.cancel_at is None:
            run.cancel_at = time.monotonic()
        await self._send(Cancel(job_id=job_id))

    def has(self, job_id: str) -> bool:
        return job_id in self._runs

    async def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            if proc.stdin is not None:
                proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
