"""The job envelope: one status enum and one record, shared by the sync and async paths."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from kinema.jobs.spec import JobSpec


class Status(enum.StrEnum):
    QUEUED = "QUEUED"
    PROCESSING = "PROCESSING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"

    @property
    def final(self) -> bool:
        return self in (Status.COMPLETED, Status.FAILED)


ACTIVE = (Status.QUEUED.value, Status.PROCESSING.value)
"""The unfinished states, as stored."""


@dataclass(frozen=True)
class Job:
    id: str
    key_id: str
    model: str
    status: Status
    spec: JobSpec
    price_micros: int
    sync: bool
    attempts: int
    lease_owner: str | None
    cancel_requested: bool
    progress: float | None
    output_key: str | None
    output_content_type: str | None
    output_metadata: dict[str, Any] | None
    error: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    inference_time: float | None
    expires_at: float
    output_expires_at: float | None
    idempotency_key: str | None = None
    request_hash: str | None = None
    startup_time: float | None = None
    """How long its run waited for a worker to come up (a Ray replica started from zero)."""
    waiter: str | None = None
    """A sync job's: the replica whose open connection waits for it (see jobs.liveness)."""
    phase: str | None = None
    """A running job's phase (``loading``, ``denoising``, ``decoding``, ``encoding``,
    ``storing``), None before its worker reports one."""
    phase_progress: float | None = None
    """How far into :attr:`phase` (0..1), when the worker can tell."""

    @property
    def queue_time(self) -> float | None:
        return None if self.started_at is None else self.started_at - self.created_at

    @property
    def total_time(self) -> float | None:
        return None if self.finished_at is None else self.finished_at - self.created_at


@dataclass(frozen=True)
class Lease:
    """A claim taken at insert time (a sync job handed straight to a free local slot)."""

    owner: str
    expires_at: float


def inserted_job(
    new: NewJob, *, now: float, expires_at: float, lease: Lease | None, waiter: str | None = None
) -> Job:
    """The row :func:`kinema.jobs.repository.insert_job` writes, without reading it back."""
    claimed = lease is not None
    return Job(
        id=new.id,
        key_id=new.key_id,
        model=new.model,
        status=Status.PROCESSING if claimed else Status.QUEUED,
        spec=new.spec,
        price_micros=new.price_micros,
        sync=new.sync,
        attempts=1 if claimed else 0,
        lease_owner=lease.owner if lease is not None else None,
        cancel_requested=False,
        progress=0.0 if claimed else None,
        output_key=None,
        output_content_type=None,
        output_metadata=None,
        error=None,
        created_at=now,
        started_at=now if claimed else None,
        finished_at=None,
        inference_time=None,
        expires_at=expires_at,
        output_expires_at=None,
        idempotency_key=new.idempotency_key,
        request_hash=new.request_hash,
        waiter=waiter,
    )


@dataclass(frozen=True)
class Webhook:
    """Where to POST the request's end, and the base URL its output link is made with."""

    url: str
    base_url: str


@dataclass(frozen=True)
class NewJob:
    """What the API hands the job service at submit time."""

    id: str
    key_id: str
    model: str
    spec: JobSpec
    price_micros: int
    sync: bool = False
    idempotency_key: str | None = None
    request_hash: str | None = None
    webhook: Webhook | None = None
