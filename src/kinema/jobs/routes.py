"""Async request status and results: ``/v2/requests/{id}[/status|/cancel]`` and the v1 alias."""

from __future__ import annotations

from typing import Annotated, Any, Protocol

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from kinema.api.deps import Services, api_key, base_url, services
from kinema.api.schemas import ErrorResponse
from kinema.billing.keys import from_micros
from kinema.billing.service import KeyService
from kinema.errors import GenerationFailed
from kinema.jobs.models import Job, Status
from kinema.jobs.schemas import ResultResponse, StatusResponse
from kinema.settings import Settings
from kinema.storage.base import Storage

router = APIRouter()
SvcDep = Annotated[Services, Depends(services)]
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (401, 404, 422)
}


class ResultSources(Protocol):
    """What a result body is built from: the routes pass their :class:`Services`, the webhook
    sender its own parts (it does not depend on the HTTP container)."""

    @property
    def settings(self) -> Settings: ...

    @property
    def keys(self) -> KeyService: ...

    @property
    def storage(self) -> Storage: ...


async def job_of_caller(request: Request, svc: Services, request_id: str) -> Job:
    """The caller's request ``request_id`` (401 without a valid key; 404 for another key's)."""
    key = await svc.keys.authenticate(api_key(request))
    return await svc.jobs.get_for_key(request_id, key.id)


async def _metrics(svc: ResultSources, job: Job) -> dict[str, Any]:
    balance = await svc.keys.balance(job.key_id)
    return {
        "inference_time": job.inference_time,
        "queue_time": job.queue_time,
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


async def status_body(root: str, svc: Services, job: Job) -> tuple[dict[str, Any], int]:
    """The status URL's answer for ``job`` (URLs under ``root``): its body and HTTP status (422
    when FAILED)."""
    metrics = await _metrics(svc, job)
    if job.status is Status.FAILED:
        return _failed(job, metrics), GenerationFailed.status_code
    position = await svc.jobs.queue_position(job) if job.status is Status.QUEUED else None
    body = _status(
        root,
        job,
        metrics,
        progress=job.progress if job.status is Status.PROCESSING else None,
        queue_position=position,
    )
    return body, 200


async def result_body(root: str, svc: ResultSources, job: Job) -> tuple[dict[str, Any], int]:
    """The result URL's answer for ``job`` (its output's URL under ``root``): its body and HTTP
    status (422 when FAILED)."""
    metrics = await _metrics(svc, job)
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


@router.get(
    "/v2/requests/{request_id}/status",
    response_model=StatusResponse,
    responses=ERRORS,
    summary="Status of an async request",
)
async def request_status(request_id: str, request: Request, svc: SvcDep) -> JSONResponse:
    job = await job_of_caller(request, svc, request_id)
    body, code = await status_body(base_url(request, svc.settings), svc, job)
    return JSONResponse(body, status_code=code)


def _status(root: str, job: Job, metrics: dict[str, Any], **extra: Any) -> dict[str, Any]:
    body = StatusResponse(
        request_id=job.id,
        status=job.status.value,
        status_url=f"{root}/v2/requests/{job.id}/status",
        response_url=f"{root}/v2/requests/{job.id}",
        metrics=metrics,
        **extra,
    )
    return body.model_dump(exclude_none=True)


@router.get(
    "/v2/requests/{request_id}",
    response_model=ResultResponse,
    responses=ERRORS,
    summary="Result of an async request",
)
@router.get(
    "/v1/requests/{request_id}",
    response_model=ResultResponse,
    responses=ERRORS,
    summary="Result of an async request (the v1 alias: the poll_url)",
)
async def request_result(request_id: str, request: Request, svc: SvcDep) -> JSONResponse:
    job = await job_of_caller(request, svc, request_id)
    body, code = await result_body(base_url(request, svc.settings), svc, job)
    return JSONResponse(body, status_code=code)


@router.post(
    "/v2/requests/{request_id}/cancel",
    response_model=StatusResponse,
    responses=ERRORS,
    summary="Cancel an async request (extension): queued → refunded now; running → stops at the "
    "next step and is refunded",
)
async def request_cancel(request_id: str, request: Request, svc: SvcDep) -> JSONResponse:
    job = await job_of_caller(request, svc, request_id)
    job = await svc.jobs.cancel(job)
    root = base_url(request, svc.settings)
    return JSONResponse(_status(root, job, await _metrics(svc, job), error=job.error))
