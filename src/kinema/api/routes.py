"""The two hosted request paths for every model slug: v1 (sync: answers the media) and v2
(async: answers a request id at once)."""

from __future__ import annotations

import base64
import functools
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse, Response
from starlette.routing import Match
from starlette.types import Scope

from kinema.api.deps import (
    DirectRoute,
    Services,
    api_key,
    base_url,
    read_body,
    services,
    services_of,
)
from kinema.api.headers import generation_headers
from kinema.api.schemas import ErrorResponse
from kinema.api.service import Submission
from kinema.errors import (
    BackendUnavailable,
    ClientGone,
    GenerationTimeout,
    InvalidRequest,
    KinemaError,
    StorageUnavailable,
)
from kinema.jobs.models import Status
from kinema.jobs.schemas import AsyncSubmitResponse
from kinema.jobs.service import CLIENT_GONE, SHUT_DOWN, WORKER_LOST

router = APIRouter()

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse}
    for code in (400, 401, 403, 404, 406, 410, 413, 429, 500, 502, 504)
}
SvcDep = Annotated[Services, Depends(services)]
MAX_IDEMPOTENCY_KEY = 200
IdempotencyKey = Annotated[
    str | None, Header(alias="Idempotency-Key", max_length=MAX_IDEMPOTENCY_KEY)
]


async def _submit(
    request: Request, svc: Services, slug: str, *, sync: bool, idempotency_key: str | None = None
) -> tuple[Submission, Any]:
    return await svc.generation.submit(
        slug,
        content_type=request.headers.get("content-type"),
        api_key=api_key(request),
        body=functools.partial(read_body, request, svc.settings.server.max_body_mb),
        sync=sync,
        idempotency_key=idempotency_key,
        origin=functools.partial(base_url, request, svc.settings),
    )


async def generate_sync(
    request: Request, slug: str, idempotency_key: IdempotencyKey = None
) -> Response:
    # The sync path (a DirectRoute: see install_sync). ``idempotency_key`` is declared for the
    # OpenAPI document; a DirectRoute passes path parameters only, so it is read from the
    # headers here.
    svc = services_of(request)
    idempotency_key = _idempotency_key(request)
    sub, parsed = await _submit(request, svc, slug, sync=True, idempotency_key=idempotency_key)
    # Inserted claimed (PROCESSING) only when handed to this process's own dispatcher (never a
    # replay: that one is read from the store).
    fresh = sub.balance_micros is not None
    known = sub.job if fresh and sub.job.status is Status.PROCESSING else None
    # A client that gave an Idempotency-Key may come back for the result (a retry attaches to
    # the same job), so its disconnect does not cancel the job; without one, nobody can.
    gone = None if idempotency_key else request.is_disconnected
    job = await svc.jobs.wait_final(
        sub.job.id, svc.settings.server.sync_timeout_s, known=known, gone=gone
    )
    if not job.status.final and await request.is_disconnected():
        # Nobody will read the answer: stop the generation and refund it (a run that finishes
        # meanwhile is still charged: it was made, though no one took it).
        await svc.jobs.cancel(job, reason=CLIENT_GONE)
        raise ClientGone(CLIENT_GONE)
    if not job.status.final:
        job = await svc.jobs.cancel(job, reason="generation timed out (sync wait)")
        if job.status is not Status.COMPLETED:  # unless it completed just now: then answer it
            timeout = GenerationTimeout(
                f"generation did not finish within {svc.settings.server.sync_timeout_s:g} s; "
                "it was cancelled and refunded (use the v2 endpoint for long generations)"
            )
            timeout.headers = {"x-request-id": job.id}
            raise timeout
    # Completed: the reservation taken at submit is the charge, so that balance is still "after
    # this request"; otherwise the refund changed it.
    balance = sub.balance_micros
    if balance is None or job.status is not Status.COMPLETED:
        balance = await svc.keys.balance(sub.key.id)
    headers = generation_headers(job, balance, sub.rate)
    if idempotency_key:
        headers["idempotency-key"] = idempotency_key
        headers["x-idempotent-replay"] = "false" if fresh else "true"
    if job.status is Status.FAILED:
        raise _sync_failure(job.error or "generation failed", headers)
    assert job.output_key is not None and job.output_content_type is not None
    try:
        data = await svc.storage.get_bytes(job.output_key)
    except StorageUnavailable as exc:
        # Not a 503: that tells a client the request did not run and may be sent again, and
        # this one ran and was charged. Its output stays readable by its request id.
        lost = KinemaError(
            f"the generation completed but its output could not be read: {exc.message}; "
            f"read it with GET /v2/requests/{job.id} once the storage is back"
        )
        lost.headers = headers
        raise lost from exc
    if getattr(parsed, "base64", False):
        encoded = base64.b64encode(data).decode()
        return JSONResponse({sub.endpoint.base64_field: encoded}, headers=headers)
    return Response(data, media_type=job.output_content_type, headers=headers)


def _idempotency_key(request: Request) -> str | None:
    value = request.headers.get("idempotency-key")
    if value is not None and not 0 < len(value) <= MAX_IDEMPOTENCY_KEY:
        raise InvalidRequest(
            f"Idempotency-Key: must be 1 to {MAX_IDEMPOTENCY_KEY} characters (got {len(value)})"
        )
    return value


OTHER_V1_PATHS = frozenset({"get-user-credits"})
"""Fixed ``/v1/<name>`` paths of other routes, which the sync path must leave to them."""


class SyncRoute(DirectRoute):
    """``POST /v1/{slug}``, which does not claim the fixed ``/v1`` paths of other routes: a
    request there with a method they do not take is their 405, with their ``Allow``, not this
    route's (a partial match of the first route to match would otherwise answer for them)."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = super().matches(scope)
        if match is not Match.NONE and child["path_params"]["slug"] in OTHER_V1_PATHS:
            return Match.NONE, {}
        return match, child


def install_sync(app_router: APIRouter) -> None:
    """The sync path, added to the app's own router (an included router costs each request
    its own matching pass) as a :class:`DirectRoute` — the client waits on every microsecond of
    it. Add it after the routers with fixed ``/v1`` POST paths and before the rest: only POSTs
    match it, and it leaves the fixed ``/v1`` GET paths to their routes (:class:`SyncRoute`)."""
    app_router.add_api_route(
        "/v1/{slug}",
        generate_sync,
        methods=["POST"],
        responses={200: {"content": {"video/mp4": {}, "image/png": {}}}, **ERRORS},
        summary="Generate and wait (sync): answers the media bytes",
        route_class_override=SyncRoute,
    )


def _sync_failure(error: str, headers: dict[str, str]) -> KinemaError:
    """A sync generation that failed after acceptance (already refunded): 502 when no worker
    could run it (lost, or stopped with the server), 500 otherwise; the 422 of a failed request
    is the async path's."""
    unavailable = error.startswith(WORKER_LOST) or error == SHUT_DOWN
    failure = BackendUnavailable(error) if unavailable else KinemaError(error)
    failure.headers = headers
    return failure


@router.post(
    "/v2/{slug}",
    response_model=AsyncSubmitResponse,
    responses=ERRORS,
    summary="Submit (async): answers a request id at once",
)
async def generate_async(
    slug: str, request: Request, svc: SvcDep, idempotency_key: IdempotencyKey = None
) -> JSONResponse:
    sub, _ = await _submit(request, svc, slug, sync=False, idempotency_key=idempotency_key)
    root = base_url(request, svc.settings)
    balance = sub.balance_micros
    if balance is None:
        balance = await svc.keys.balance(sub.key.id)
    job_id = sub.job.id
    body = AsyncSubmitResponse(
        request_id=job_id,
        status=sub.job.status.value,
        poll_url=f"{root}/v1/requests/{job_id}",
        status_url=f"{root}/v2/requests/{job_id}/status",
        response_url=f"{root}/v2/requests/{job_id}",
    )
    return JSONResponse(
        body.model_dump(exclude_none=True), headers=generation_headers(sub.job, balance, sub.rate)
    )
