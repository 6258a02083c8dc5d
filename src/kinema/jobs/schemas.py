"""The async path's answers (``POST /v2/{slug}``, status and result URLs), for the routes and
the OpenAPI document."""

from __future__ import annotations

from typing import Any, Final

from pydantic import BaseModel, Field

from kinema.runners.protocol import Phase

__all__ = ["REQUEST_STATUSES", "AsyncSubmitResponse", "ResultResponse", "StatusResponse"]

REQUEST_STATUSES: Final = ("QUEUED", "PROCESSING", "COMPLETED", "FAILED")
"""The hosted async statuses. Response models type ``status`` as ``str`` so an extension status
never turns a status answer into a 500."""

_STATUS_HELP = "One of " + ", ".join(REQUEST_STATUSES) + "."


class AsyncSubmitResponse(BaseModel):
    """Answer to ``POST /v2/{slug}``: the request is queued."""

    request_id: str
    status: str = Field(default="QUEUED", description=_STATUS_HELP)
    poll_url: str
    status_url: str
    response_url: str


class StatusResponse(BaseModel):
    """Answer to ``GET /v2/requests/{id}/status``; render with ``exclude_none``.

    ``progress``, ``phase``, ``phase_progress`` and ``queue_position`` are extensions;
    ``error`` is set when FAILED.
    """

    request_id: str
    status: str = Field(description=_STATUS_HELP)
    status_url: str
    response_url: str
    metrics: dict[str, Any] = Field(default_factory=dict)
    progress: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description=(
            "PROCESSING only: the whole run's progress, every phase counted by its measured "
            "share; 1 only once the output is stored."
        ),
    )
    phase: Phase | None = Field(
        default=None,
        description=(
            "PROCESSING only, once the worker reports it: what the run is doing now — loading "
            "inputs, denoising, decoding frames (encoded as they come), finishing the encode, "
            "storing the output."
        ),
    )
    phase_progress: float | None = Field(
        default=None, ge=0, le=1, description="How far into ``phase`` (when it can be told)."
    )
    queue_position: int | None = Field(default=None, ge=0)
    error: str | None = None


class ResultResponse(BaseModel):
    """Answer to ``GET /v2/requests/{id}``; ``output`` is the media URL once COMPLETED.

    A FAILED request answers 422 with ``error`` set; render with ``exclude_none``.
    """

    request_id: str
    status: str = Field(description=_STATUS_HELP)
    output: str | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None
