"""The dispatcher: claims runnable jobs from the store (with a lease), hands them to the runner,
renews the lease while they run, and settles them: COMPLETED keeps the charge, everything else
refunds. A runner that vanishes hands the job back for a retry (bounded by jobs.max_attempts)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import time
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from kinema.errors import KinemaError
from kinema.jobs import repository as repo
from kinema.jobs.handoff import Handoff
from kinema.jobs.leases import Held, Leases
from kinema.jobs.liveness import Liveness
from kinema.jobs.models import Job, Lease, NewJob, Status
from kinema.jobs.service import CANCELLED, SHUT_DOWN, WAITER_LOST, WORKER_LOST, JobService
from kinema.jobs.slots import Queue, Slots
from kinema.logs import REQUEST_ID
from kinema.runners.base import RunCancelled, RunFailed, Runner, RunnerLost, RunResult, RunTask
from kinema.settings import JobSettings
from kinema.storage.base import Storage
from kinema.store.db import Database

if TYPE_CHECKING:
    from kinema.metrics.instruments import Metrics

log = logging.getLogger(__name__)

STOP_RUNS_S = 10.0
"""How long a stop waits for the workers to stop the runs it cancels (they stop at their next
step) before it stops waiting; those runs are handed back all the same."""

SETTLE_AFTER_ANSWER_S = 0.02
"""The longest a sync job's settle waits after its answer for the next job to go to a worker
(see Dispatcher._complete)."""


class Dispatcher:
    def __init__(
        self,
        db: Database,
        jobs: JobService,
        runner: Runner,
        storage: Storage,
        settings: JobSettings,
        *,
        models: Mapping[str, str],
        metrics: Metrics | None = None,
        liveness: Liveness | None = None,
    ) -> None:
        """``models``: model slug → engine task (which pool runs its jobs); ``metrics``: where
        each job it settles is counted; ``liveness``: this process's replica id (the leases'
        owner) and which other replicas have stopped (None: only leases tell)."""
        self._metrics = metrics
        self._liveness = liveness
        self._db = db
        self._jobs = jobs
        self._runner = runner
        self._storage = storage
        self._settings = settings
        self.owner = liveness.id if liveness else f"dispatcher-{uuid.uuid4().hex[:12]}"
        self._active: dict[str, asyncio.Task[None]] = {}
        self._slots = Slots(runner.pools, models)
        """One queue per pool; a job holds its pool's slot from launch until the runner
        returns (its settling goes on in ``_active`` without holding the slot)."""
        self._loop: asyncio.Task[None] | None = None
        self._leases = Leases(
            db, self.owner, settings.lease_s, running=self._slots.running, cancel=runner.cancel
        )
        self._held = self._leases.held
        """Jobs whose lease this dispatcher renews: from launch until settled."""
        self._abandoned_checked = 0.0
        self._stopping = False
        self._dispatch_waiters: list[asyncio.Future[None]] = []
        """Settles waiting for the next job to be sent to a worker (:meth:`_next_dispatch`)."""
        self._interrupted: set[str] = set()
        """Jobs whose runs a stop cancelled (their end is :meth:`_hand_back`'s to settle)."""
        self._cancels: set[asyncio.Task[None]] = set()
        jobs.notifier.on_cancel = self._cancel_requested

    @property
    def idle(self) -> bool:
        """No job is held, running or being settled here."""
        return not self._active and not self._slots.reserved

    def start(self) -> None:
        self._loop = asyncio.create_task(self._run_forever(), name="kinema-dispatcher")
        self._leases.start()

    async def stop(self) -> None:
        """Stop claiming, give running jobs ``jobs.shutdown_grace_s`` to finish, then stop the
        rest (at their next step, :data:`STOP_RUNS_S` at most) and hand them back
        (:meth:`_hand_back`)."""
        # A flag, not cancellation: Python 3.11's wait_for can swallow a cancel that races
        # with the event it waits for, which would leave the loop running forever.
        self._stopping = True
        self._jobs.notifier.work_available.set()
        self._dispatched()  # answered sync jobs settle now
        if self._loop is not None:
            await self._loop
        running = list(self._active.values())
        if running:
            await asyncio.wait(running, timeout=self._settings.shutdown_grace_s)
        interrupted = [held for job_id, held in self._held.items() if self._slots.running(job_id)]
        # The workers stop those runs at their next step; each run's task then ends by itself,
        # once its worker has let go of the job's scratch directory.
        self._interrupted = {held.job_id for held in interrupted}
        for job_id in self._interrupted:
            await self._runner.cancel(job_id)
        left = [task for task in running if not task.done()]
        if left:
            await asyncio.wait(left, timeout=STOP_RUNS_S)
        for task in left:
            task.cancel()  # its worker did not answer in time: stop waiting for it
        await asyncio.gather(*running, return_exceptions=True)
        await self._hand_back(interrupted)
        await self._leases.stop()

    def _cancel_requested(self, job_id: str) -> None:
        """A cancel was asked for, through this replica or another: a run held here stops now
        (the next lease renewal would find the request too, within a second)."""
        if job_id in self._held and self._slots.running(job_id):
            task = asyncio.create_task(self._runner.cancel(job_id), name=f"cancel-{job_id}")
            self._cancels.add(task)
            task.add_done_callback(self._cancels.discard)

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
        """Take over what stopped replicas left and fail abandoned jobs (at most once per poll
        interval: they are scans), then claim for each pool as many of its jobs as it has free
        slots."""
        if time.monotonic() - self._abandoned_checked >= self._settings.poll_interval_s:
            self._abandoned_checked = time.monotonic()
            await self._take_over_stopped()
            await self._fail_abandoned()
        taken = 0
        for queue in self._slots.queues:
            taken += await self._claim(queue)
        return taken

    async def _claim(self, queue: Queue) -> int:
        free = queue.free
        if free <= 0 or not queue.models:
            queue.drained = False  # unknown: look again as soon as a slot frees
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
                models=queue.models,
            )
        )
        queue.drained = len(claimed) < free
        for job in claimed:
            self._launch(job, queue)
        return len(claimed)

    # Direct hand-off: a sync job goes straight to a free local slot, claimed in the same
    # transaction that inserts it, skipping a claim round trip and a wake-up. It is sent to the
    # worker as soon as its body and input headers are checked (start_early), and inserted
    # while the worker runs (admit), or refused and stopped (withdraw). Its small inputs travel
    # with it and reach the storage only if the job has to leave this process (its worker was
    # lost and it goes back to the queue); larger ones are stored at once.

    async def offer_slot(self, model: str) -> Handoff | None:
        """A slot for a job of ``model`` about to be inserted, when its pool has one free and
        none of the pool's jobs waits in the queue (so nothing older is overtaken); None
        otherwise. Pair with start_early() or withdraw()."""
        queue = self._slots.for_model(model)
        if queue is None or self._stopping or queue.free <= 0:
            return None
        if not queue.drained:
            now, attempts = time.time(), self._settings.max_attempts
            waiting = await self._db.read(
                lambda conn: repo.has_runnable(
                    conn, now=now, max_attempts=attempts, models=queue.models
                )
            )
            if waiting:
                self._jobs.notifier.work_available.set()  # a slot is free: claim them
                return None
            queue.drained = True
            if self._stopping or queue.free <= 0:  # changed while reading
                return None
        queue.reserved += 1
        lease = Lease(owner=self.owner, expires_at=time.time() + self._settings.lease_s)
        loop = asyncio.get_running_loop()
        return Handoff(lease, self._storage, loop.create_future(), queue=queue)

    def start_early(self, new: NewJob, handoff: Handoff) -> None:
        """Send a sync job to the slot held by ``handoff`` before it is inserted (under
        ``handoff.lease``), its inputs with the hand-off, so that the request's remaining checks
        and its insert overlap with the generation. admit() or withdraw() must follow: the run's
        output is stored and settled only once the job is admitted."""
        handoff.queue.reserved -= 1
        handoff.job_id = new.id
        self._launch(new, handoff.queue, handoff)

    def admit(self, handoff: Handoff, job: Job) -> None:
        """The started job is inserted (claimed by this dispatcher): its run may settle."""
        handoff.admitted.set_result(job)

    async def withdraw(self, handoff: Handoff) -> None:
        """Give the slot back: the job was refused (or lost an idempotency race) after all. A
        started run is stopped; its slot frees when the worker has let it go, and nothing of it
        is stored or settled (no row, no charge exists for it)."""
        if handoff.job_id is None:
            handoff.queue.reserved -= 1
            return
        handoff.admitted.set_result(None)
        await self._runner.cancel(handoff.job_id)

    def _launch(self, job: Job | NewJob, queue: Queue, handoff: Handoff | None = None) -> None:
        queue.running.add(job.id)
        self._active[job.id] = asyncio.create_task(
            self._execute(job, handoff), name=f"job-{job.id}"
        )
        self._active[job.id].add_done_callback(functools.partial(self._done, job.id))

    def _release_slot(self, job_id: str) -> None:
        """The runner is done with ``job_id``: its slot is free for the next job even while the
        job is still being stored and settled. A freed slot is worth a claim only if the last
        one left jobs behind; local submits wake the loop themselves and other replicas' jobs
        are found by the poll."""
        queue = self._slots.holding(job_id)
        if queue is not None:
            queue.running.discard(job_id)
            if not queue.drained:
                self._jobs.notifier.work_available.set()

    def _done(self, job_id: str, task: asyncio.Task[None]) -> None:
        # A job handed back for a retry may already run again under the same id: only the
        # current run's entry is removed.
        if self._active.get(job_id) is task:
            del self._active[job_id]
            self._release_slot(job_id)  # if it ended before reaching the runner

    async def _take_over_stopped(self) -> None:
        """A replica that stopped without handing its jobs back (killed, crashed): the jobs it
        ran are retried now, not after their leases; the sync jobs whose clients it held are
        cancelled and refunded — nobody can be answered with them (the first start after a
        crash finds its own predecessor's)."""
        if self._liveness is None:
            return
        named = await self._db.read(repo.named_replicas)
        dead = sorted(await self._liveness.dead(named - {self.owner}))
        if not dead:
            return
        log.warning("replicas stopped: %s; taking over their jobs", ", ".join(dead))
        now = time.time()
        queued = await self._db.write(lambda conn: repo.orphan(conn, dead, now=now))
        for job in queued:
            failed = await self._jobs.settle_failed(
                job, WAITER_LOST, owner=None, expected=(Status.QUEUED,)
            )
            if failed and self._metrics is not None:
                self._metrics.job_settled(job, Status.FAILED)
        self._jobs.notifier.work_available.set()  # their jobs are claimable now

    async def _fail_abandoned(self) -> None:
        now = time.time()
        lost = await self._db.read(
            lambda conn: repo.abandoned(conn, now=now, max_attempts=self._settings.max_attempts)
        )
        for job in lost:  # their dispatcher died: settled under its lease owner
            error = CANCELLED if job.cancel_requested else _abandoned(job)
            await self._fail(job, error, owner=job.lease_owner)

    async def _execute(self, job: Job | NewJob, handoff: Handoff | None) -> None:
        """Run and settle ``job`` (a :class:`NewJob` when it was started before its insert);
        ``handoff`` holds its inputs when it was handed off."""
        REQUEST_ID.set(job.id)  # this task's log lines name the job (JSON logs)
        # Its lease is renewed from its insert until it is settled.
        held = Held(job.id, handed_off=handoff is not None)
        if handoff is None:
            self._leases.hold(held)
        else:
            handoff.admitted.add_done_callback(functools.partial(self._hold, held))
        try:
            settled = await self._run_and_settle(job, held, handoff)
        finally:
            self._leases.release(held)
        # Kept only while a retry may still need them.
        if settled and (handoff is None or handoff.stored):
            await self._discard(f"inputs/{job.id}")

    def _hold(self, held: Held, admitted: asyncio.Future[Job | None]) -> None:
        """A job started before its insert has its lease renewed once it is admitted."""
        if not admitted.cancelled() and admitted.result() is not None:
            self._leases.hold(held)

    async def _run_and_settle(
        self, pending: Job | NewJob, held: Held, handoff: Handoff | None
    ) -> bool:
        """Run the job and settle it; False when it was handed back for a retry instead."""
        outcome: RunResult | Exception
        try:
            outcome = await self._run(pending, held, handoff)
        except Exception as exc:  # settled below, once the job is known to exist
            outcome = exc
        if handoff is None:
            assert isinstance(pending, Job)
            job: Job | None = pending
        else:
            job = await handoff.admitted
        if job is None:  # withdrawn: no row, no charge; nothing of the run is kept
            await self._discard(f"outputs/{pending.id}")
            if handoff is not None and handoff.stored:
                await self._discard(f"inputs/{pending.id}")
            return True
        try:
            if isinstance(outcome, Exception):
                raise outcome
            await self._complete(job, outcome)
        except RunCancelled as exc:
            if job.id in self._interrupted:  # by a stop, not by the client: handed back
                return False
            detail = "" if str(exc) == RunCancelled.DEFAULT else f" ({exc})"
            await self._fail(job, CANCELLED + detail, owner=self.owner)
        except RunFailed as exc:
            await self._fail(job, f"generation failed: {exc}", owner=self.owner)
        except RunnerLost as exc:
            log.warning("job %s: runner lost (%s); handing it back", job.id, exc)
            if handoff is not None:
                await handoff.persist()
            return await self._release(job)
        except KinemaError as exc:
            await self._fail(job, exc.message, owner=self.owner)
        except Exception as exc:
            log.exception("job %s failed unexpectedly", job.id)
            await self._fail(job, f"internal error: {type(exc).__name__}", owner=self.owner)
        return True

    async def _run(self, job: Job | NewJob, held: Held, handoff: Handoff | None) -> RunResult:
        """The job's run; the slot frees when it returns."""
        task = RunTask(job_id=job.id, spec=job.spec, inline=handoff.data if handoff else {})
        # Runs once this task has suspended, that is once the runner has sent the job.
        asyncio.get_running_loop().call_soon(self._dispatched)
        try:
            return await self._runner.run(task, held.report, held.alive)
        finally:
            self._release_slot(job.id)

    async def _fail(self, job: Job, error: str, *, owner: str | None) -> None:
        """FAILED and refunded, under ``owner``'s lease."""
        settled = await self._jobs.settle_failed(job, error, owner=owner)
        if settled and self._metrics is not None:
            self._metrics.job_settled(job, Status.FAILED)

    async def _hand_back(self, interrupted: list[Held]) -> None:
        """Jobs whose runs a stop interrupted, still leased here. One taken from the queue goes
        back to it at once with its attempt given back (a stop is no failure), so the next start
        or another process runs it without waiting for the lease to expire. A sync job handed
        straight to this process fails and is refunded: its client waits on this process, which
        is going away, and its inputs lived here. So does a job a cancel was asked for (as a
        cancel, refunded). A job cut off while settling, after its run, is left to its lease."""
        if not interrupted:
            return
        queued = [held.job_id for held in interrupted if not held.handed_off]
        released = await self._db.write(
            lambda conn: {
                job_id
                for job_id in queued
                if repo.release(conn, job_id, self.owner, attempt_back=True)
            }
        )
        if released:
            log.info("handed %d interrupted job(s) back to the queue", len(released))
        for held in interrupted:
            if held.job_id in released:
                continue
            job = await self._db.read(functools.partial(repo.get, job_id=held.job_id))
            if job is not None:  # handed off, or a cancel was asked for (no-op if not ours)
                error = CANCELLED if job.cancel_requested else SHUT_DOWN
                await self._fail(job, error, owner=self.owner)

    async def _release(self, job: Job) -> bool:
        """Hand a job whose worker was lost back to the queue, or fail and refund it when it has
        no attempts left. Returns True when the job is now settled."""
        if job.attempts >= self._settings.max_attempts:
            await self._fail(job, _abandoned(job), owner=self.owner)
            return True
        if not await self._db.write(lambda conn: repo.release(conn, job.id, self.owner)):
            # A cancel was asked for (or the job is no longer ours: then this changes nothing).
            await self._fail(job, CANCELLED, owner=self.owner)
            return True
        self._jobs.notifier.job_submitted()
        return False

    async def _complete(self, job: Job, result: RunResult) -> None:
        # The worker stored the output under a key derived from the job id: a retried job
        # overwrites, never adds a second output.
        values: dict[str, Any] = {
            "output_key": result.output_key,
            "output_content_type": result.content_type,
            "output_metadata": result.metadata,
            "inference_time": result.inference_time,
            "startup_time": result.startup_time,
        }
        if job.sync and self._jobs.notifier.watched(job.id):
            # The output is stored and its price was taken at submit: the waiting client gets
            # its answer first, the COMPLETED row a moment later, once the client's next request
            # (sent as soon as it has read this answer) is on its way to a worker — the settle
            # and clean-up then cost it nothing. (After a fixed delay instead, they landed on
            # the next request's path whenever its checks took longer than that delay.) A crash
            # in between leaves the job to its lease: it runs again and is still charged once.
            # Readers in this process see the final job meanwhile (JobService.get consults the
            # notifier). A client waiting on another replica is not made to wait for that: it
            # is answered from the settled row, so a job no one waits for here settles at once.
            finished = dataclasses.replace(
                job, status=Status.COMPLETED, progress=1.0, finished_at=time.time(), **values
            )
            self._jobs.notifier.job_finished(finished, publish=False)
            await self._next_dispatch(SETTLE_AFTER_ANSWER_S)
        final = await self._jobs.settle_completed(job, self.owner, **values)
        if final is not None and self._metrics is not None:
            self._metrics.job_settled(final, final.status)
        if final is None:
            log.warning("job %s finished after losing its lease; result discarded", job.id)
        elif final.status is not Status.COMPLETED:  # cancelled while it finished: refunded
            await self._discard(f"outputs/{job.id}")

    async def _discard(self, prefix: str) -> None:
        """Delete what a settled job leaves behind; a storage that is down leaves it to the
        retention task, which deletes every expired job's objects (the job is settled and its
        money is right either way)."""
        try:
            await self._storage.delete_prefix(prefix)
        except KinemaError as exc:
            log.warning("could not delete %s (%s); retention will", prefix, exc.message)

    def _dispatched(self) -> None:
        """A job has just been sent to a worker: the settles waiting for that moment run."""
        waiters, self._dispatch_waiters = self._dispatch_waiters, []
        for waiter in waiters:
            _resolve(waiter)

    async def _next_dispatch(self, limit_s: float) -> None:
        """Wait until the next job has been sent to a worker, or ``limit_s`` at most (not at
        all while stopping)."""
        if self._stopping:
            return
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._dispatch_waiters.append(waiter)
        timer = loop.call_later(limit_s, _resolve, waiter)
        try:
            await waiter
        finally:
            timer.cancel()


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _abandoned(job: Job) -> str:
    return f"{WORKER_LOST} {job.attempts} times; the job was abandoned"
