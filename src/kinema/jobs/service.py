"""Job use cases: submit (credits reserved in the same transaction), read, wait, cancel, settle.

Money and work move together: a job exists exactly when its price is reserved, and every way a
job can end other than COMPLETED refunds the reservation exactly once."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from kinema.billing import repository as billing
from kinema.errors import Conflict, InsufficientCredits, NotFound
from kinema.jobs import outbox
from kinema.jobs import repository as repo
from kinema.jobs.models import Job, Lease, NewJob, Status, inserted_job
from kinema.jobs.notify import Notifier
from kinema.settings import Settings
from kinema.store.db import Database

CANCELLED = "cancelled by the client"
WORKER_LOST = "the generation worker was lost"
SHUT_DOWN = "the server shut down before the generation finished"
CLIENT_GONE = "cancelled: the client of this sync request disconnected before it finished"
WAITER_LOST = (
    "cancelled: the server holding this sync request's connection stopped before it finished"
)


class JobService:
    def __init__(
        self, db: Database, settings: Settings, notifier: Notifier, *, replica: str | None = None
    ) -> None:
        """``replica``: this process's replica id, recorded as the waiter of the sync jobs it
        submits (see :mod:`kinema.jobs.liveness`)."""
        self._db = db
        self._settings = settings
        self.notifier = notifier
        self.replica = replica

    async def submit(self, new: NewJob, lease: Lease | None = None) -> tuple[Job, int | None]:
        """Reserve the price and insert the job in ONE transaction (with ``lease``: inserted
        already claimed). Returns the job and the balance after the reservation; with an
        idempotency key seen before (same body) the earlier job comes back, uncharged, with
        None for the balance."""
        if new.idempotency_key:
            earlier = await self.replay(new)
            if earlier is not None:
                return earlier, None
        now = time.time()
        expires = now + self._settings.retention.request_ttl_s
        waiter = self.replica if new.sync else None

        def tx(conn: Connection) -> int:
            after = billing.reserve(conn, new.key_id, new.id, new.price_micros, now=now)
            if after is None:
                balance = billing.balance(conn, new.key_id)
                raise InsufficientCredits(
                    f"not enough credits: this request costs {new.price_micros / 1e6:.4f}, "
                    f"the balance is {balance / 1e6:.4f}"
                )
            repo.insert_job(conn, new, now=now, expires_at=expires, lease=lease, waiter=waiter)
            if new.webhook is not None:
                outbox.insert_webhook(conn, new.id, new.webhook)
            return after

        try:
            after = await self._db.write(tx)
        except IntegrityError:
            # Two submits with one idempotency key raced; the loser answers with the winner's job.
            earlier = await self.replay(new)
            if earlier is None:
                raise
            return earlier, None
        if lease is None:
            self.notifier.job_submitted()
        job = inserted_job(new, now=now, expires_at=expires, lease=lease, waiter=waiter)
        return job, after

    async def replay(self, new: NewJob) -> Job | None:
        """The earlier job with this idempotency key, if any (409 if its body differs)."""
        idem = new.idempotency_key
        assert idem is not None
        earlier = await self._db.read(lambda conn: repo.by_idempotency_key(conn, new.key_id, idem))
        if earlier is None:
            return None
        if earlier.request_hash != new.request_hash or earlier.model != new.model:
            raise Conflict(
                "Idempotency-Key was already used with a different request body; "
                "use a new key for a new request"
            )
        return earlier

    async def get(self, job_id: str) -> Job | None:
        """The job as stored — or as this process announced it final, when its settle is still
        on the way (a sync job is answered a moment before its row says COMPLETED)."""
        job = await self._db.read(lambda conn: repo.get(conn, job_id))
        if job is not None and not job.status.final:
            return self.notifier.recent(job_id) or job
        return job

    async def get_for_key(self, job_id: str, key_id: str) -> Job:
        """The job if ``key_id`` submitted it and it has not expired; else 404 (never 403, so ids
        of other keys cannot be probed)."""
        job = await self.get(job_id)
        if job is None or job.key_id != key_id or job.expires_at < time.time():
            raise NotFound(f"Request {job_id} not found")
        return job

    async def queue_position(self, job: Job) -> int:
        return await self._db.read(lambda conn: repo.queue_position(conn, job))

    async def wait_final(
        self,
        job_id: str,
        timeout: float,
        *,
        known: Job | None = None,
        gone: Callable[[], Awaitable[bool]] | None = None,
    ) -> Job:
        """Wait for the job to finish: an in-process announcement carries the final job; the
        store is polled as the fallback (a job run by another replica). ``known``: the job as
        this process just inserted it, claimed by its own dispatcher — only this process settles
        it while it holds the lease, so the first look needs no read. ``gone``: whether the
        waiting client has left, asked at each look that finds the job unfinished (the job is
        then returned unfinished, as on the timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            with self.notifier.watch(job_id) as watch:
                if known is not None:
                    job: Job | None = self.notifier.recent(job_id) or known
                    known = None
                else:
                    job = await self.get(job_id)
                assert job is not None
                remaining = deadline - time.monotonic()
                if job.status.final or remaining <= 0:
                    return job
                if gone is not None and await gone():
                    return job
                # asyncio.timeout, not wait_for: no extra task, one wake-up less.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(
                        min(remaining, self._settings.jobs.poll_interval_s * 4)
                    ):
                        await watch.event.wait()
                if watch.job is not None and watch.job.status.final:
                    return watch.job

    async def cancel(self, job: Job, reason: str = CANCELLED) -> Job:
        """Queued: failed and refunded now. Running: flagged; the runner stops at the next step
        and the dispatcher settles it. Final: unchanged."""
        if job.status is Status.QUEUED and await self.settle_failed(
            job, reason, owner=None, expected=(Status.QUEUED,)
        ):
            return await self._reload(job.id)
        if not job.status.final:
            await self._db.write(lambda conn: repo.request_cancel(conn, job.id))
            self.notifier.cancel_requested(job.id)
        return await self._reload(job.id)

    async def _reload(self, job_id: str) -> Job:
        job = await self.get(job_id)
        assert job is not None
        return job

    async def settle_completed(self, job: Job, owner: str, **values: Any) -> Job | None:
        """COMPLETED with its output — unless a cancel was asked for meanwhile: a client told
        "cancelled" is never charged, so the job then ends FAILED (cancelled) and refunded.
        Returns the final job, or None if the lease was lost (someone else settles it)."""
        now = time.time()

        def tx(conn: Connection) -> Job | None:
            final = repo.finish(
                conn,
                job.id,
                status=Status.COMPLETED,
                now=now,
                owner=owner,
                expected=(Status.PROCESSING,),
                unless_cancelled=True,
                progress=1.0,
                output_expires_at=now + self._settings.retention.output_ttl_s,
                **values,
            )
            # A cancel arrived while it finished: FAILED (cancelled) and refunded instead.
            return final or _fail_and_refund(conn, job, CANCELLED, owner, (Status.PROCESSING,), now)

        final = await self._db.write(tx)
        if final is not None:
            self.notifier.job_finished(final)
        return final

    async def settle_failed(
        self,
        job: Job,
        error: str,
        *,
        owner: str | None,
        expected: tuple[Status, ...] = (Status.PROCESSING,),
    ) -> bool:
        """FAILED + full refund, once; False if the job was already settled by someone else."""
        now = time.time()

        final = await self._db.write(
            lambda conn: _fail_and_refund(conn, job, error, owner, expected, now)
        )
        if final is not None:
            self.notifier.job_finished(final)
        return final is not None


def _fail_and_refund(
    conn: Connection,
    job: Job,
    error: str,
    owner: str | None,
    expected: tuple[Status, ...],
    now: float,
) -> Job | None:
    """FAILED with ``error`` and the reservation refunded, once; None if it did not apply."""
    final = repo.finish(
        conn, job.id, status=Status.FAILED, now=now, owner=owner, expected=expected, error=error
    )
    if final is not None:
        billing.refund(conn, job.key_id, job.id, job.price_micros, now=now, note=error)
    return final
