"""The dispatcher: claims runnable jobs from the store (with a lease), hands them to the runner,
renews the lease while they run, and settles them: COMPLETED keeps the charge, everything else
refunds. A runner that vanishes hands the job back for a retry (bounded by jobs.max_attempts)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kinema.errors import KinemaError
from kinema.jobs import repository as repo
from kinema.jobs.models import Job, Lease, Status
from kinema.jobs.service import CANCELLED, WORKER_LOST, JobService
from kinema.runners.base import RunCancelled, RunFailed, Runner, RunnerLost, RunResult, RunTask
from kinema.settings import JobSettings
from kinema.storage.base import Storage
from kinema.store.db import Database

log = logging.getLogger(__name__)

SETTLE_AFTER_ANSWER_S = 0.002
"""How long a sync job's settle waits after its answer (see Dispatcher._complete)."""


class Dispatcher:
    def __init__(
        self,
        db: Database,
        jobs: JobService,
        runner: Runner,
        storage: Storage,
        settings: JobSettings,
        *,
        tasks: dict[str, str],
        work_root: Path | None = None,
    ) -> None:
        self._db = db
        self._jobs = jobs
        self._runner = runner
        self._storage = storage
        self._settings = settings
        self._tasks = tasks
        self._work_root = work_root
        """Scratch space; beside the local storage so outputs are renamed into it, not copied."""
        """model slug → engine task."""
        self.owner = f"dispatcher-{uuid.uuid4().hex[:12]}"
        self._active: dict[str, asyncio.Task[None]] = {}
        self._running: set[str] = set()
        """Jobs holding a runner slot: from launch until the runner returns (their settling
        goes on in ``_active`` without holding the slot)."""
        self._loop: asyncio.Task[None] | None = None
        self._abandoned_checked = 0.0
        self._stopping = False
        self._reserved = 0
        self._drained = False
        self._spare: Path | None = None
        """A scratch directory made in advance for the next hand-off (made after a job ends,
        off any request's path: making one costs a filesystem round trip)."""

    def start(self) -> None:
        if self._work_root is not None:
            self._work_root.mkdir(parents=True, exist_ok=True)
        self._make_spare()
        self._loop = asyncio.create_task(self._run_forever(), name="kinema-dispatcher")

    async def stop(self) -> None:
        """Stop claiming, give running jobs ``jobs.shutdown_grace_s`` to finish, then abandon
        the rest to their lease (another dispatcher or the next start retries them)."""
        # A flag, not cancellation: Python 3.11's wait_for can swallow a cancel that races
        # with the event it waits for, which would leave the loop running forever.
        self._stopping = True
        self._jobs.notifier.work_available.set()
        if self._loop is not None:
            await self._loop
        running = list(self._active.values())
        if running:
            await asyncio.wait(running, timeout=self._settings.shutdown_grace_s)
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        if self._spare is not None:
            shutil.rmtree(self._spare, ignore_errors=True)
            self._spare = None

    async def _run_forever(self) -> None:
        wake = self._jobs.notifier.work_available
        while not self._stopping:
            try:
                await self.tick()
            except Exception:
                log.exception("dispatcher tick failed")
            if self._stopping:
                return
            wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), self._settings.poll_interval_s)

    async def tick(self) -> int:
        """Fail abandoned jobs (at most once per poll interval: it is a scan), then claim as
        many jobs as there are free slots."""
        if time.monotonic() - self._abandoned_checked >= self._settings.poll_interval_s:
            self._abandoned_checked = time.monotonic()
            await self._fail_abandoned()
        free = self._free_slots()
        if free <= 0:
            self._drained = False  # unknown: look again as soon as a slot frees
            return 0
        now = time.time()
        claimed = await self._db.write(
            lambda conn: repo.claim(
                conn,
                owner=self.owner,
                limit=free,
                now=now,
                lease_s=self._settings.lease_s,
                max_attempts=self._settings.max_attempts,
            )
        )
        self._drained = len(claimed) < free
        for job in claimed:
            self._launch(job)
        return len(claimed)

    # Direct hand-off: a sync job goes straight to a free local slot, claimed in the same
    # transaction that inserts it, skipping a claim round trip and a wake-up. Its inputs are
    # written straight into its scratch directory; they reach the storage only if the job has
    # to leave this process (its worker was lost and it goes back to the queue).

    async def offer_slot(self) -> Handoff | None:
        """A slot for a job about to be inserted, when one is free and no job waits in the
        queue (so nothing older is overtaken); None otherwise. Pair with take() or withdraw()."""
        if self._stopping or self._free_slots() <= 0:
            return None
        if not self._drained:
            now, attempts = time.time(), self._settings.max_attempts
            waiting = await self._db.read(
                lambda conn: repo.has_runnable(conn, now=now, max_attempts=attempts)
            )
            if waiting:
                self._jobs.notifier.work_available.set()  # a slot is free: claim them
                return None
            self._drained = True
            if self._stopping or self._free_slots() <= 0:  # changed while reading
                return None
        self._reserved += 1
        lease = Lease(owner=self.owner, expires_at=time.time() + self._settings.lease_s)
        workdir, self._spare = self._spare or self._scratch(), None
        return Handoff(lease, workdir)

    def withdraw(self, handoff: Handoff) -> None:
        self._reserved -= 1
        shutil.rmtree(handoff.workdir, ignore_errors=True)

    def take(self, job: Job, handoff: Handoff) -> None:
        """Run a job inserted under the lease of ``handoff``, its inputs in ``handoff.workdir``."""
        self._reserved -= 1
        self._launch(job, handoff.workdir)
        # The next hand-off's scratch directory, made once this job is on its way to the
        # worker (the callback runs after the job's task has sent it).
        asyncio.get_running_loop().call_soon(self._make_spare)

    def _free_slots(self) -> int:
        return self._runner.capacity - len(self._running) - self._reserved

    def _launch(self, job: Job, workdir: Path | None = None) -> None:
        self._running.add(job.id)
        self._active[job.id] = asyncio.create_task(
            self._execute(job, workdir), name=f"job-{job.id}"
        )
        self._active[job.id].add_done_callback(functools.partial(self._done, job.id))

    def _scratch(self, prefix: str = "") -> Path:
        return Path(tempfile.mkdtemp(prefix=prefix, dir=self._work_root))

    def _recycle(self, workdir: Path) -> None:
        """Empty a finished job's scratch directory and keep it as the spare (cheaper than
        removing it and making another), or remove it when a spare is already there."""
        if self._spare is not None or self._stopping or not _empty(workdir):
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            self._spare = workdir

    def _make_spare(self) -> None:
        if self._spare is None and not self._stopping:
            self._spare = self._scratch()

    def _release_slot(self, job_id: str) -> None:
        """The runner is done with ``job_id``: its slot is free for the next job even while the
        job is still being stored and settled. A freed slot is worth a claim only if the last
        one left jobs behind; local submits wake the loop themselves and other replicas' jobs
        are found by the poll."""
        if job_id in self._running:
            self._running.discard(job_id)
            if not self._drained:
                self._jobs.notifier.work_available.set()

    def _done(self, job_id: str, task: asyncio.Task[None]) -> None:
        # A job handed back for a retry may already run again under the same id: only the
        # current run's entry is removed.
        if self._active.get(job_id) is task:
            del self._active[job_id]
            self._release_slot(job_id)  # if it ended before reaching the runner
        self._make_spare()

    async def _fail_abandoned(self) -> None:
        now = time.time()
        lost = await self._db.read(
            lambda conn: repo.abandoned(conn, now=now, max_attempts=self._settings.max_attempts)
        )
        for job in lost:
            await self._jobs.settle_failed(
                job,
                f"{WORKER_LOST} {job.attempts} times; the job was abandoned",
                owner=job.lease_owner,
            )

    async def _execute(self, job: Job, handed_workdir: Path | None) -> None:
        """Run and settle ``job``; ``handed_workdir`` holds its inputs when it was handed off."""
        workdir = handed_workdir or self._scratch(prefix=f"{job.id}-")
        progress: list[float] = [0.0]
        heartbeat = asyncio.create_task(self._heartbeat(job, progress))
        try:
            settled = await self._run_and_settle(job, workdir, progress, handed_workdir is not None)
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
            self._recycle(workdir)
        if settled and handed_workdir is None:  # kept only while a retry may still need them
            await self._storage.delete_prefix(f"inputs/{job.id}")

    async def _run_and_settle(
        self, job: Job, workdir: Path, progress: list[float], inputs_local: bool
    ) -> bool:
        """Run the job and settle it; False when it was handed back for a retry instead."""
        try:
            task = RunTask(
                job_id=job.id,
                task=self._tasks[job.model],
                params=job.params,
                inputs=_local_inputs(job, workdir)
                if inputs_local
                else await self._materialize(job, workdir),
                output_dir=workdir,
            )
            try:
                result = await self._runner.run(task, lambda value: progress.__setitem__(0, value))
            finally:
                self._release_slot(job.id)
            await self._complete(job, result)
        except RunCancelled:
            await self._jobs.settle_failed(job, CANCELLED, owner=self.owner)
        except RunFailed as exc:
            await self._jobs.settle_failed(job, f"generation failed: {exc}", owner=self.owner)
        except RunnerLost as exc:
            log.warning("job %s: runner lost (%s); handing it back", job.id, exc)
            if inputs_local:
                await self._persist_inputs(job, workdir)
            return await self._release(job)
        except KinemaError as exc:
            await self._jobs.settle_failed(job, exc.message, owner=self.owner)
        except Exception as exc:
            log.exception("job %s failed unexpectedly", job.id)
            await self._jobs.settle_failed(
                job, f"internal error: {type(exc).__name__}", owner=self.owner
            )
        return True

    async def _persist_inputs(self, job: Job, workdir: Path) -> None:
        """Move a handed-off job's inputs from its scratch directory into the storage, where a
        retry (by any process) finds them."""
        for key in _input_keys(job):
            await self._storage.put_file(key, input_path(workdir, key), "application/octet-stream")

    async def _release(self, job: Job) -> bool:
        """Hand a job whose worker was lost back to the queue, or fail and refund it when it has
        no attempts left. Returns True when the job is now settled."""
        if job.attempts >= self._settings.max_attempts:
            await self._jobs.settle_failed(
                job, f"{WORKER_LOST} {job.attempts} times; the job was abandoned", owner=self.owner
            )
            return True
        await self._db.write(lambda conn: repo.release(conn, job.id, self.owner))
        self._jobs.notifier.job_submitted()
        return False

    async def _materialize(self, job: Job, workdir: Path) -> dict[str, Any]:
        """Copy the job's stored inputs next to the worker (its storage may be remote)."""
        for key in _input_keys(job):
            await self._storage.get_to_file(key, input_path(workdir, key))
        return _local_inputs(job, workdir)

    async def _complete(self, job: Job, result: RunResult) -> None:
        # The key derives from the job id: a retried job overwrites, never adds a second output.
        key = f"outputs/{job.id}/{result.output_path.name}"
        await self._storage.put_file(key, result.output_path, result.content_type)
        values: dict[str, Any] = {
            "output_key": key,
            "output_content_type": result.content_type,
            "output_metadata": result.metadata,
            "inference_time": result.inference_time,
        }
        if job.sync:
            # The output is stored and its price was taken at submit: the waiting client gets
            # its answer first, the COMPLETED row a moment later, once the client's next request
            # (sent as soon as it has read this answer) is on its way to a worker — the settle
            # and clean-up then cost it nothing. A crash in between leaves the job to its lease:
            # it runs again and is still charged once. Readers in this process see the final
            # job meanwhile (JobService.get consults the notifier).
            finished = dataclasses.replace(
                job, status=Status.COMPLETED, progress=1.0, finished_at=time.time(), **values
            )
            self._jobs.notifier.job_finished(finished)
            await asyncio.sleep(SETTLE_AFTER_ANSWER_S)
        final = await self._jobs.settle_completed(job, self.owner, **values)
        if final is None:
            log.warning("job %s finished after losing its lease; result discarded", job.id)
        elif final.status is not Status.COMPLETED:  # cancelled while it finished: refunded
            await self._storage.delete_prefix(f"outputs/{job.id}")

    async def _heartbeat(self, job: Job, progress: list[float]) -> None:
        """Renew the lease, publish progress and pick up cancel requests (which may come from
        another API replica, hence through the store) about once a second."""
        tick = min(1.0, self._settings.lease_s / 3)
        sent = -1.0
        while True:
            await asyncio.sleep(tick)
            value = progress[0]
            renew = functools.partial(
                repo.renew_lease,
                job_id=job.id,
                owner=self.owner,
                until=time.time() + self._settings.lease_s,
                progress=value if value != sent else None,
            )
            cancel = await self._db.write(renew)
            sent = value
            if cancel:
                await self._runner.cancel(job.id)


@dataclass(frozen=True)
class Handoff:
    """A free local slot held for a sync job about to be inserted: the lease it is inserted
    under (already claimed) and the scratch directory its inputs are written to."""

    lease: Lease
    workdir: Path


def _empty(directory: Path) -> bool:
    """Remove what ``directory`` holds; False if that failed (it is then not reused)."""
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path)
                else:
                    os.unlink(entry.path)
    except OSError:
        return False
    return True


def input_path(workdir: Path, key: str) -> Path:
    """Where the input stored under ``key`` lives in a job's scratch directory."""
    return workdir / key.replace("/", "_")


def _input_keys(job: Job) -> list[str]:
    keys: list[str] = []
    for value in job.inputs.values():
        if isinstance(value, list):
            keys.extend(value)
        elif value is not None:
            keys.append(value)
    return keys


def _local_inputs(job: Job, workdir: Path) -> dict[str, Any]:
    """The job's inputs as the worker's local file paths, keeping their names and shapes."""
    local: dict[str, Any] = {}
    for name, value in job.inputs.items():
        if isinstance(value, list):
            local[name] = [str(input_path(workdir, key)) for key in value]
        elif value is not None:
            local[name] = str(input_path(workdir, value))
    return local
