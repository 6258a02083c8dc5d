"""The bodies of a request's status and result answers, built once for the routes, the event
stream and the webhook sender (none of which this module depends on)."""

from __future__ import annotations

from typing import Any, Protocol

from kinema.billing.keys import from_micros
from kinema.billing.service import KeyService
from kinema.errors import GenerationFailed
from kinema.jobs.models import Job, Status
from kinema.jobs.schemas import ResultResponse, StatusResponse
from kinema.jobs.service import JobService
from kinema.settings import Settings
from kinema.storage.base import Storage


class ResultSources(Protocol):
    """What a result body is built from: the routes pass their :class:`Services`, the webhook
    sender its own parts (it does not depend on the HTTP container)."""

    @property
    def settings(self) -> Settings: ...

    @property
    def keys(self) -> KeyService: ...

    @property
    def storage(self) -> Storage: ...


class StatusSources(ResultSources, Protocol):
    """What a status body is built from as well: the job service (queue positions)."""

    @property
    def jobs(self) -> JobService: ...


async def metrics_of(svc: ResultSources, job: Job) -> dict[str, Any]:
    balance = await svc.keys.balance(job.key_id)
    return {
        "inference_time": job.inference_time,
        "queue_time": job.queue_time,
        "startup_time": job.startup_time,
        "total_time": job.total_time,
        "cost": from_micros(job.price_micros if job.status is not Status.FAILED else 0),
        "remaining_credits": from_micros(balance),
    }


def _failed(job: Job, metrics: dict[str, Any]) -> dict[str, Any]:
    return {
        "request_id": job.id,
        "status": job.status.value,
        "error": job.error,
        "metrics": metrics,
    }


async def status_body(root: str, svc: StatusSources, job: Job) -> tuple[dict[str, Any], int]:
    """The status URL's answer for ``job`` (URLs under ``root``): its body and HTTP status (422
    when FAILED)."""
    metrics = await metrics_of(svc, job)
    if job.status is Status.FAILED:
        return _failed(job, metrics), GenerationFailed.status_code
    position = await svc.jobs.queue_position(job) if job.status is Status.QUEUED else None
    body = status_of(
        root,
        job,
        metrics,
        progress=job.progress if job.status is Status.PROCESSING else None,
        phase=job.phase if job.status is Status.PROCESSING else None,
        phase_progress=job.phase_progress if job.status is Status.PROCESSING else None,
        queue_position=position,
    )
    return body, 200


async def result_body(root: str, svc: ResultSources, job: Job) -> tuple[dict[str, Any], int]:
    """The result URL's answer for ``job`` (its output's URL under ``root``): its body and HTTP
    status (422 when FAILED)."""
    metrics = await metrics_of(svc, job)
    if job.status is Status.FAILED:
        return _failed(job, metrics), GenerationFailed.status_code
    output = None
    if job.status is Status.COMPLETED and job.output_key is not None:
        output = svc.storage.url(
            job.output_key, base_url=root, ttl_s=svc.settings.storage.url_ttl_s
        )
    body = ResultResponse(
        request_id=job.id, status=job.status.value, output=output, metrics=metrics
    )
    return body.model_dump(exclude_none=True), 200


def status_of(root: str, job: Job, metrics: dict[str, Any], **extra: Any) -> dict[str, Any]:
    body = StatusResponse(
        request_id=job.id,
        status=job.status.value,
        status_url=f"{root}/v2/requests/{job.id}/status",
        response_url=f"{root}/v2/requests/{job.id}",
        metrics=metrics,
        **extra,
    )
    return body.model_dump(exclude_none=True)
