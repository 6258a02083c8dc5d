"""Async request status and results: ``/v2/requests/{id}[/status|/cancel|/events]``, the v1
alias, and the calling key's webhook secret."""

from __future__ import annotations

import base64
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, StreamingResponse

from kinema.api.deps import Services, api_key, base_url, services, services_of
from kinema.api.schemas import ErrorResponse
from kinema.jobs.bodies import metrics_of, result_body, status_body, status_of
from kinema.jobs.events import stream
from kinema.jobs.models import Job
from kinema.jobs.schemas import ResultResponse, StatusResponse
from kinema.jobs.webhooks import secret_for

router = APIRouter()
SvcDep = Annotated[Services, Depends(services)]
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (401, 404, 422)
}


async def job_of_caller(request: Request, svc: Services, request_id: str) -> Job:
    """The caller's request ``request_id`` (401 without a valid key; 404 for another key's)."""
    key = await svc.keys.authenticate(api_key(request))
    return await svc.jobs.get_for_key(request_id, key.id)


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
    return JSONResponse(status_of(root, job, await metrics_of(svc, job), error=job.error))


@router.get(
    "/v2/requests/{request_id}/events",
    responses={200: {"content": {"text/event-stream": {}}}, **ERRORS},
    response_class=StreamingResponse,
    summary="Status changes as Server-Sent Events (extension): status events until the job "
    "ends, then its result",
)
async def request_events(request_id: str, request: Request) -> StreamingResponse:
    svc = services_of(request)
    job = await job_of_caller(request, svc, request_id)  # 401 / 404 before any stream
    return StreamingResponse(
        stream(base_url(request, svc.settings), svc, job),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get(
    "/v2/webhooks/secret",
    responses={401: {"model": ErrorResponse}},
    summary="The calling key's webhook signing secret (extension)",
)
async def webhook_secret(request: Request, svc: SvcDep) -> dict[str, str]:
    key = await svc.keys.authenticate(api_key(request))
    encoded = base64.b64encode(secret_for(svc.secret, key.id)).decode()
    return {"secret": f"whsec_{encoded}"}
