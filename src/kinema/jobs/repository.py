"""SQL for jobs, in one place. Claims use ``FOR UPDATE SKIP LOCKED`` on PostgreSQL; on SQLite the
database-wide write lock (BEGIN IMMEDIATE) gives the same exclusivity.

Statements that every job runs (insert, get, claim, lease renewal, settle, the dispatcher's
scans) are built once with bound parameters and run as :class:`~kinema.store.prepared.Prepared`
(on SQLite, straight on the driver)."""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import (
    BindParameter,
    Connection,
    and_,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)

from kinema.jobs.models import ACTIVE, Job, Lease, NewJob, Status
from kinema.jobs.spec import dump_spec, load_spec
from kinema.runners.base import RunProgress
from kinema.store.prepared import Prepared
from kinema.store.tables import jobs, webhooks


def _job(row: Any) -> Job:
    return Job(
        id=row.id,
        key_id=row.key_id,
        model=row.model,
        status=Status(row.status),
        spec=load_spec(row.params, row.inputs),
        price_micros=row.price_micros,
        sync=row.sync,
        attempts=row.attempts,
        lease_owner=row.lease_owner,
        cancel_requested=row.cancel_requested,
        progress=row.progress,
        output_key=row.output_key,
        output_content_type=row.output_content_type,
        output_metadata=row.output_metadata,
        error=row.error,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        inference_time=row.inference_time,
        expires_at=row.expires_at,
        output_expires_at=row.output_expires_at,
        idempotency_key=row.idempotency_key,
        request_hash=row.request_hash,
        startup_time=row.startup_time,
        waiter=row.waiter,
        phase=row.phase,
        phase_progress=row.phase_progress,
    )


_INSERT = Prepared(insert(jobs))
_GET = Prepared(select(jobs).where(jobs.c.id == bindparam("job")))


def insert_job(
    conn: Connection,
    new: NewJob,
    *,
    now: float,
    expires_at: float,
    lease: Lease | None = None,
    waiter: str | None = None,
) -> None:
    """Insert a queued job, or, with ``lease``, one already claimed by the lease's owner;
    ``waiter``: the replica whose connection waits for it (a sync job's)."""
    claimed: dict[str, Any] = {}
    if lease is not None:
        claimed = {
            "status": Status.PROCESSING.value,
            "lease_owner": lease.owner,
            "lease_expires_at": lease.expires_at,
            "attempts": 1,
            "started_at": now,
            "progress": 0.0,
        }
    _INSERT.rows(
        conn,
        {
            "id": new.id,
            "key_id": new.key_id,
            "model": new.model,
            "status": Status.QUEUED.value,
            "params": dump_spec(new.spec),
            "inputs": {},  # before spec v1: the input keys by name (now in the spec)
            "price_micros": new.price_micros,
            "sync": new.sync,
            "idempotency_key": new.idempotency_key,
            "request_hash": new.request_hash,
            "attempts": 0,
            "cancel_requested": False,
            "created_at": now,
            "expires_at": expires_at,
            "lease_owner": None,
            "lease_expires_at": None,
            "started_at": None,
            "progress": None,
            "phase": None,
            "phase_progress": None,
            "waiter": waiter,
            **claimed,
        },
    )


def get(conn: Connection, job_id: str) -> Job | None:
    row = _GET.first(conn, {"job": job_id})
    return _job(row) if row else None


def by_idempotency_key(conn: Connection, key_id: str, idem: str) -> Job | None:
    row = (
        conn.execute(select(jobs).where(jobs.c.key_id == key_id, jobs.c.idempotency_key == idem))
    ).first()
    return _job(row) if row else None


_NOW: BindParameter[float] = bindparam("b_now")
_RUNNABLE = (
    select(jobs.c.id)
    .where(
        or_(
            jobs.c.status == Status.QUEUED.value,
            and_(jobs.c.status == Status.PROCESSING.value, jobs.c.lease_expires_at < _NOW),
        ),
        jobs.c.attempts < bindparam("b_max_attempts"),
        jobs.c.cancel_requested.is_(False),
    )
    .order_by(jobs.c.created_at)
    .limit(bindparam("b_limit"))
)


@functools.cache
def _claims(models: tuple[str, ...] | None) -> tuple[Prepared, Prepared, Prepared]:
    """(candidates, claim, claim with SKIP LOCKED) for the jobs of ``models`` (None: all), built
    once per model set (a pool's)."""
    runnable = _RUNNABLE
    if models is not None:
        runnable = runnable.where(or_(*(jobs.c.model == model for model in models)))
    return (
        Prepared(runnable),
        Prepared(_claim_statement(runnable)),
        Prepared(_claim_statement(runnable.with_for_update(skip_locked=True))),
    )


def has_runnable(
    conn: Connection, *, now: float, max_attempts: int, models: tuple[str, ...] | None = None
) -> bool:
    """Whether :func:`claim` would find a job (of ``models``) now."""
    params = {"b_now": now, "b_max_attempts": max_attempts, "b_limit": 1}
    return _claims(models)[0].first(conn, params) is not None


def _claim_statement(candidates: Any) -> Any:
    return (
        update(jobs)
        .where(jobs.c.id.in_(candidates.scalar_subquery()))
        .values(
            status=Status.PROCESSING.value,
            lease_owner=bindparam("b_owner"),
            lease_expires_at=bindparam("b_until"),
            attempts=jobs.c.attempts + 1,
            started_at=func.coalesce(jobs.c.started_at, _NOW),
            progress=0.0,
            phase=None,  # a retried run starts over
            phase_progress=None,
        )
        .returning(*jobs.c)
    )


def claim(
    conn: Connection,
    *,
    owner: str,
    limit: int,
    now: float,
    lease_s: float,
    max_attempts: int,
    models: tuple[str, ...] | None = None,
) -> list[Job]:
    """Take up to ``limit`` runnable jobs (queued, or processing with an expired lease and
    attempts left) of ``models`` (None: any), oldest first, leasing them to ``owner``: one
    UPDATE … RETURNING."""
    _, plain, skip_locked = _claims(models)
    stmt = skip_locked if conn.dialect.name == "postgresql" else plain
    params = {
        "b_now": now,
        "b_max_attempts": max_attempts,
        "b_limit": limit,
        "b_owner": owner,
        "b_until": now + lease_s,
    }
    rows = stmt.rows(conn, params)
    return sorted((_job(r) for r in rows), key=lambda job: job.created_at)


_ABANDONED = Prepared(
    select(jobs).where(
        jobs.c.status == Status.PROCESSING.value,
        jobs.c.lease_expires_at < _NOW,
        or_(jobs.c.attempts >= bindparam("b_max_attempts"), jobs.c.cancel_requested.is_(True)),
    )
)


def abandoned(conn: Connection, *, now: float, max_attempts: int) -> list[Job]:
    """Jobs whose lease expired that no claim will take again: their runner died once too
    often, or after a cancel was asked for (which only the lease holder could act on)."""
    rows = _ABANDONED.rows(conn, {"b_now": now, "b_max_attempts": max_attempts})
    return [_job(r) for r in rows]


_RENEW = Prepared(
    update(jobs)
    .where(
        jobs.c.id == bindparam("b_job"),
        jobs.c.lease_owner == bindparam("b_owner"),
        jobs.c.status == Status.PROCESSING.value,
    )
    .returning(jobs.c.cancel_requested)
)


def renew_lease(
    conn: Connection,
    job_id: str,
    owner: str,
    *,
    until: float,
    progress: RunProgress | None = None,
) -> bool | None:
    """Extend the lease, and store ``progress`` (overall, phase, share of the phase) when
    given; returns the job's cancel flag, or None if the lease was lost."""
    params: dict[str, Any] = {"b_job": job_id, "b_owner": owner, "lease_expires_at": until}
    if progress is not None:
        params["progress"] = progress.value
        params["phase"] = progress.phase
        params["phase_progress"] = progress.phase_progress
    row = _RENEW.first(conn, params)
    return None if row is None else bool(row[0])


@functools.cache
def _finish_statement(
    expected: tuple[Status, ...], owned: bool, unless_cancelled: bool
) -> Prepared:
    stmt = (
        update(jobs)
        .where(
            jobs.c.id == bindparam("b_job"),
            or_(*(jobs.c.status == s.value for s in expected)),  # IN (...) would expand per call
        )
        .returning(*jobs.c)
    )
    if owned:
        stmt = stmt.where(jobs.c.lease_owner == bindparam("b_owner"))
    if unless_cancelled:
        stmt = stmt.where(jobs.c.cancel_requested.is_(False))
    return Prepared(stmt)


def finish(
    conn: Connection,
    job_id: str,
    *,
    status: Status,
    now: float,
    owner: str | None,
    expected: tuple[Status, ...],
    unless_cancelled: bool = False,
    **values: Any,
) -> Job | None:
    """Move a job to a final status, only from ``expected`` and (if given) under ``owner``'s lease
    — with ``unless_cancelled``, only if no cancel was asked for. Returns the settled job, or
    None when it did not apply (callers never settle twice). ``values`` are further columns."""
    params = {
        "b_job": job_id,
        "status": status.value,
        "finished_at": now,
        "lease_expires_at": None,
        **values,
    }
    assert owner is not None or not unless_cancelled, "unless_cancelled needs the lease owner"
    if owner is not None:
        params["b_owner"] = owner
    row = _finish_statement(expected, owner is not None, unless_cancelled).first(conn, params)
    return _job(row) if row else None


def release(conn: Connection, job_id: str, owner: str, *, attempt_back: bool = False) -> bool:
    """Hand a job leased to ``owner`` back to the queue (the next claim retries it): its runner
    was lost, or, with ``attempt_back``, a stop interrupted it (which does not count as one of
    its attempts). False when it is not ``owner``'s, or a cancel was asked for (no claim would
    take it: it is to be failed and refunded instead)."""
    attempts = {"attempts": jobs.c.attempts - 1} if attempt_back else {}
    result = conn.execute(
        update(jobs)
        .where(
            jobs.c.id == job_id,
            jobs.c.lease_owner == owner,
            jobs.c.status == Status.PROCESSING.value,
            jobs.c.cancel_requested.is_(False),
        )
        .values(status=Status.QUEUED.value, lease_owner=None, lease_expires_at=None, **attempts)
    )
    return result.rowcount == 1


def named_replicas(conn: Connection) -> set[str]:
    """The replicas unfinished jobs depend on: running jobs' lease owners, sync jobs' waiters."""
    rows = conn.execute(
        select(jobs.c.lease_owner, jobs.c.waiter).where(jobs.c.status.in_(ACTIVE)).distinct()
    )
    return {name for row in rows for name in row if name is not None}


def orphan(conn: Connection, dead: list[str], *, now: float) -> list[Job]:
    """What the stopped replicas ``dead`` leave: their running jobs' leases end now (the next
    claim retries them); the sync jobs they held the connections of are to be cancelled — a
    running one is flagged (its lease holder stops it, and refunds), the queued ones are
    returned, to be failed and refunded."""
    conn.execute(
        update(jobs)
        .where(
            jobs.c.status == Status.PROCESSING.value,
            jobs.c.sync.is_(True),
            jobs.c.waiter.in_(dead),
        )
        .values(cancel_requested=True)
    )
    conn.execute(
        update(jobs)
        .where(
            jobs.c.status == Status.PROCESSING.value,
            jobs.c.lease_owner.in_(dead),
            jobs.c.lease_expires_at >= now,
        )
        .values(lease_expires_at=0.0)  # expired
    )
    rows = conn.execute(
        select(jobs).where(
            jobs.c.status == Status.QUEUED.value, jobs.c.sync.is_(True), jobs.c.waiter.in_(dead)
        )
    )
    return [_job(r) for r in rows]


def request_cancel(conn: Connection, job_id: str) -> None:
    conn.execute(update(jobs).where(jobs.c.id == job_id).values(cancel_requested=True))


def queue_position(conn: Connection, job: Job) -> int:
    """0-based number of queued jobs ahead of ``job``."""
    value = conn.scalar(
        select(func.count())
        .select_from(jobs)
        .where(jobs.c.status == Status.QUEUED.value, jobs.c.created_at < job.created_at)
    )
    return int(value or 0)


def expired(conn: Connection, *, now: float, limit: int) -> list[Job]:
    rows = conn.execute(
        select(jobs)
        .where(
            jobs.c.expires_at < now,
            jobs.c.status.in_([Status.COMPLETED, Status.FAILED]),
            jobs.c.output_key.is_(None),
        )
        .limit(limit)
    )
    return [_job(r) for r in rows]


def outputs_expired(conn: Connection, *, now: float, limit: int) -> list[Job]:
    rows = conn.execute(
        select(jobs)
        .where(jobs.c.output_expires_at < now, jobs.c.output_key.is_not(None))
        .limit(limit)
    )
    return [_job(r) for r in rows]


def forget_output(conn: Connection, job_id: str) -> None:
    conn.execute(update(jobs).where(jobs.c.id == job_id).values(output_key=None))


def delete_jobs(conn: Connection, ids: list[str]) -> None:
    conn.execute(delete(webhooks).where(webhooks.c.job_id.in_(ids)))
    conn.execute(delete(jobs).where(jobs.c.id.in_(ids)))
