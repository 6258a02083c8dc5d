"""The embedded runner: worker processes on this machine, one job at a time each.

The API process stays free of torch: each worker is a child process (``kinema.runners.worker``)
that loads the engines once. A worker that dies fails its job with :class:`RunnerLost` (the
dispatcher retries it) and is restarted.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from kinema.engines.registry import LoadOptions
from kinema.runners.base import (
    ProgressCallback,
    RunCancelled,
    RunFailed,
    RunnerLost,
    RunResult,
    RunTask,
)

log = logging.getLogger(__name__)


class WorkerProcess:
    def __init__(self, config: dict[str, Any], startup_timeout_s: float) -> None:
        self._config = config
        self._startup_timeout = startup_timeout_s
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._pending: dict[str, tuple[asyncio.Future[dict[str, Any]], ProgressCallback]] = {}
        self._closed_stream = False
        """The worker's stdout ended: it is gone even if it has not been reaped yet."""

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.returncode is None and not self._closed_stream

    async def start(self) -> None:
        self._closed_stream = False
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "kinema.runners.worker",
            json.dumps(self._config),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=1 << 20,
        )
        try:
            first = await asyncio.wait_for(self._read_event(), self._startup_timeout)
        except TimeoutError:
            await self.close()
            raise RunnerLost(
                f"worker did not load its engines within {self._startup_timeout} s"
            ) from None
        if first is None or first.get("event") != "ready":
            await self.close()
            reason = first.get("error") if first else "the worker exited during startup"
            raise RunnerLost(str(reason))
        assert self._proc.stdout is not None
        self._reader = asyncio.create_task(self._read_loop(self._proc.stdout))

    async def _read_event(
        self, stream: asyncio.StreamReader | None = None
    ) -> dict[str, Any] | None:
        if stream is None:
            assert self._proc is not None and self._proc.stdout is not None
            stream = self._proc.stdout
        line = await stream.readline()
        return json.loads(line) if line else None

    async def _read_loop(self, stream: asyncio.StreamReader) -> None:
        try:
            while (event := await self._read_event(stream)) is not None:
                self._dispatch(event)
        finally:
            self._closed_stream = True
            lost = RunnerLost("the worker process exited while running the job")
            for future, _ in self._pending.values():
                if not future.done():
                    future.set_exception(lost)
            self._pending.clear()

    def _dispatch(self, event: dict[str, Any]) -> None:
        entry = self._pending.get(event.get("job_id", ""))
        if entry is None:
            return
        future, on_progress = entry
        if event["event"] == "progress":
            on_progress(float(event["value"]))
        elif not future.done():
            future.set_result(event)

    async def _send(self, message: dict[str, Any]) -> None:
        if not self.alive:
            raise RunnerLost("the worker process is not running")
        assert self._proc is not None and self._proc.stdin is not None
        try:
            self._proc.stdin.write((json.dumps(message) + "\n").encode())
            await self._proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise RunnerLost("the worker process is not reachable") from exc

    async def run(self, task: RunTask, on_progress: ProgressCallback) -> RunResult:
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[task.job_id] = (future, on_progress)
        try:
            await self._send(
                {
                    "op": "run",
                    "job_id": task.job_id,
                    "task": task.task,
                    "params": task.params,
                    "inputs": task.inputs,
                    "data": {
                        path: base64.b64encode(blob).decode() for path, blob in task.data.items()
                    },
                    "output_dir": str(task.output_dir),
                }
            )
            event = await future
        except asyncio.CancelledError:
            # The caller gave the job up (shutdown): stop the worker's work on it too.
            if self.alive:
                await self._send({"op": "cancel", "job_id": task.job_id})
            raise
        finally:
            self._pending.pop(task.job_id, None)
        return _result(event)

    async def cancel(self, job_id: str) -> None:
        if job_id in self._pending:
            await self._send({"op": "cancel", "job_id": job_id})

    def has(self, job_id: str) -> bool:
        return job_id in self._pending

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


def _result(event: dict[str, Any]) -> RunResult:
    kind = event["event"]
    if kind == "cancelled":
        raise RunCancelled("cancelled")
    if kind == "failed":
        raise RunFailed(event["error"])
    return RunResult(
        output_path=Path(event["output_path"]),
        content_type=event["content_type"],
        metadata=event["metadata"],
        inference_time=float(event["inference_time"]),
    )


class LocalRunner:
    """A pool of worker processes; capacity = number of workers."""

    def __init__(
        self,
        presets: list[str],
        options: LoadOptions,
        *,
        workers: int = 1,
        startup_timeout_s: float = 600.0,
        plugins: list[str] | None = None,
    ) -> None:
        opts = {**asdict(options), "models_dir": str(options.models_dir)}
        config = {"presets": presets, "load_options": opts, "plugins": plugins or []}
        self._workers = [WorkerProcess(config, startup_timeout_s) for _ in range(workers)]
        self._idle: asyncio.Queue[WorkerProcess] = asyncio.Queue()

    @property
    def capacity(self) -> int:
        return len(self._workers)

    async def start(self) -> None:
        await asyncio.gather(*(w.start() for w in self._workers))
        for worker in self._workers:
            self._idle.put_nowait(worker)

    async def run(self, task: RunTask, on_progress: ProgressCallback) -> RunResult:
        worker = await self._idle.get()
        try:
            if not worker.alive:
                await worker.start()
            return await worker.run(task, on_progress)
        finally:
            self._idle.put_nowait(worker)

    async def cancel(self, job_id: str) -> None:
        for worker in self._workers:
            if worker.has(job_id):
                await worker.cancel(job_id)

    async def close(self) -> None:
        await asyncio.gather(*(w.close() for w in self._workers))
