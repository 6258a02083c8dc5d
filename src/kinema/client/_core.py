"""What the sync and async clients share and that does no I/O: configuration, retry decisions,
answers turned into errors, status bodies into :class:`Progress`, Server-Sent Events decoding."""

from __future__ import annotations

import contextlib
import json
import os
import random
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from kinema import __version__
from kinema.client.builders import GenerationRequest
from kinema.client.errors import APIError, GenerationTimeout, error_for

__all__ = [
    "FINAL_STATUSES",
    "Config",
    "Event",
    "Progress",
    "RetryPolicy",
    "SSEDecoder",
    "error_of",
    "raise_for_answer",
]

FINAL_STATUSES = frozenset({"COMPLETED", "FAILED"})
DEFAULT_URL = "http://127.0.0.1:8000"
MAX_WAIT_S = 48 * 3600.0
"""Longest a wait without ``timeout`` follows a job: beyond any retention, so never reached in
practice, but every loop has a bound."""

# "safe": the call may be repeated without a second charge (GETs, cancel, a v2 submit with its
# Idempotency-Key). "sync": a v1 call with its Idempotency-Key, which only a server that
# deduplicates v1 (Kinema does; the hosted API need not) makes safe to repeat.
CallKind = Literal["safe", "sync"]
RETRY_STATUSES = frozenset({429, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to wait before trying a failed call again.

    Delays grow ``backoff_s × 2^attempt`` up to ``max_backoff_s``, with ±``jitter`` of random
    spread so that many clients do not retry in step; a 429's ``Retry-After`` is honoured as it
    is, unless longer than ``max_retry_after_s`` (then :class:`RateLimited` is raised at once).
    """

    max_retries: int = 3
    backoff_s: float = 0.5
    max_backoff_s: float = 8.0
    max_retry_after_s: float = 60.0
    jitter: float = 0.1

    def delay(self, attempt: int, retry_after: float | None = None) -> float | None:
        """Seconds to wait before retry ``attempt + 1`` (0-based), or None: give up."""
        if attempt >= self.max_retries:
            return None
        if retry_after is not None:
            return retry_after if retry_after <= self.max_retry_after_s else None
        base = min(self.max_backoff_s, self.backoff_s * 2.0**attempt)
        return base * (1 + random.uniform(-self.jitter, self.jitter))


Decision = Literal["retry", "raise", "if_deduplicated"]
"""What to do with a failed call: retry it, raise its error, or retry only if the server
deduplicates v1 requests by Idempotency-Key (:func:`deduplicates_v1`)."""


def decide_status(kind: CallKind, response: httpx.Response) -> Decision:
    """Whether an error answer may be retried without risking a second charge.

    A v1 answer that proves nothing ran (429; 503; Kinema's own 502, which means no worker took
    the job) is retried. Kinema's own 504 is raised: it cancelled and refunded the job, so a
    repeat would only answer the same. Any other 502 or 504 comes from a proxy that stopped
    waiting while the generation may still run: a repeat with the same Idempotency-Key attaches
    to it on a server that deduplicates v1, and would run it again on one that does not.
    """
    if response.status_code not in RETRY_STATUSES:
        return "raise"
    if kind == "safe" or response.status_code in (429, 503):
        return "retry"
    kinemas = "x-request-id" in response.headers  # Kinema's own answer, not a proxy's
    if response.status_code == 502:
        return "retry" if kinemas else "if_deduplicated"
    return "raise" if kinemas else "if_deduplicated"


def decide_error(kind: CallKind, exc: httpx.TransportError) -> Decision:
    """Whether a transport failure may be retried: always for safe calls and for a connection
    that was never made; a v1 call lost after it was sent may be running, so only when the
    server deduplicates v1."""
    if kind == "safe" or isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return "retry"
    return "if_deduplicated"


HEALTH_PATH = "/healthz"


def deduplicates_v1(response: httpx.Response) -> bool:
    """Whether a ``GET /healthz`` answer says the server deduplicates v1 requests by
    Idempotency-Key (Kinema's lists ``"v1"`` under ``idempotency``)."""
    if not response.is_success:
        return False
    try:
        body = response.json()
    except ValueError:
        return False
    paths = body.get("idempotency") if isinstance(body, dict) else None
    return isinstance(paths, list) and "v1" in paths


def shows_deduplication(response: httpx.Response) -> bool:
    """Whether an answer proves the server deduplicates by Idempotency-Key (Kinema's v1
    answers to a request with a key say ``x-idempotent-replay``)."""
    return "x-idempotent-replay" in response.headers


def retry_after(response: httpx.Response) -> float | None:
    """The answer's ``Retry-After`` in seconds (numeric form only), or None."""
    value = response.headers.get("retry-after", "")
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def raise_for_answer(response: httpx.Response) -> None:
    """Raise the typed :class:`APIError` for an error answer; return for 2xx."""
    if not response.is_success:
        raise error_of(response)


def error_of(response: httpx.Response) -> APIError:
    """The typed :class:`APIError` for an error answer (read in full)."""
    body: Any = None
    with contextlib.suppress(ValueError):
        body = response.json()
    message = body.get("error") if isinstance(body, dict) else None
    if not isinstance(message, str):
        message = f"HTTP {response.status_code}: {response.text[:200] or response.reason_phrase}"
    request_id = response.headers.get("x-request-id")
    if request_id is None and isinstance(body, dict):
        request_id = body.get("request_id")
    return error_for(
        response.status_code,
        message,
        body=body,
        request_id=request_id,
        retry_after=retry_after(response),
    )


@dataclass(frozen=True)
class Config:
    """A client's address, key and policies. ``KINEMA_URL`` and ``KINEMA_KEY`` fill what is not
    given: the SDK is client code, so it reads its own environment (on the server side the
    settings object stays the only reader of the environment)."""

    base_url: str
    api_key: str | None
    timeout_s: float
    retry: RetryPolicy
    poll_interval_s: float

    @classmethod
    def build(
        cls,
        base_url: str | None,
        api_key: str | None,
        timeout_s: float,
        retry: RetryPolicy | None,
        poll_interval_s: float,
    ) -> Config:
        url = base_url or os.environ.get("KINEMA_URL") or DEFAULT_URL
        key = api_key or os.environ.get("KINEMA_KEY") or None
        return cls(url.rstrip("/"), key, timeout_s, retry or RetryPolicy(), poll_interval_s)

    def headers(self) -> dict[str, str]:
        headers = {"user-agent": f"kinema-python/{__version__}"}
        if self.api_key:
            headers["x-api-key"] = self.api_key
        return headers

    def url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else self.base_url + path

    def same_origin(self, url: str) -> bool:
        """Whether ``url`` is on this server (the key is sent only there)."""
        return httpx.URL(url).netloc == httpx.URL(self.base_url).netloc


def request_of(
    model: str | GenerationRequest, params: Mapping[str, Any] | None
) -> GenerationRequest:
    """A ``(model, params)`` call or a built request, as one :class:`GenerationRequest`."""
    if isinstance(model, GenerationRequest):
        if params:
            raise TypeError("pass params inside the built request, not beside it")
        return model
    return GenerationRequest(model, dict(params or {}))


@dataclass(frozen=True)
class Progress:
    """One reading of a job's status, as ``on_progress`` callbacks get it.

    ``progress`` (0..1) while PROCESSING and ``queue_position`` (0-based) while QUEUED are
    Kinema's extensions (``None`` from the hosted API); ``phase`` and ``phase_progress`` too,
    from servers that report the phase of the work (denoise, decode, encode, ...).
    """

    request_id: str
    status: str
    progress: float | None = None
    queue_position: int | None = None
    phase: str | None = None
    phase_progress: float | None = None
    error: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> Progress:
        """From a status URL's body."""

        def num(name: str) -> float | None:
            value = body.get(name)
            return float(value) if isinstance(value, int | float) else None

        position = body.get("queue_position")
        phase = body.get("phase")
        error = body.get("error")
        return cls(
            request_id=str(body.get("request_id", "")),
            status=str(body.get("status", "")),
            progress=num("progress"),
            queue_position=position if isinstance(position, int) else None,
            phase=phase if isinstance(phase, str) else None,
            phase_progress=num("phase_progress"),
            error=error if isinstance(error, str) else None,
            raw=dict(body),
        )

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES


@dataclass(frozen=True)
class Event:
    """One Server-Sent Event: its name (``status``, ``result``, ``error``) and JSON data."""

    name: str
    data: Mapping[str, Any]


class SSEDecoder:
    """Lines of a ``text/event-stream`` in, events out (comments and keep-alives dropped)."""

    def __init__(self) -> None:
        self._name = "message"
        self._data: list[str] = []

    def feed(self, line: str) -> Event | None:
        """Take one line (without its newline); an event when it completes one."""
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._name = value
        elif name == "data":
            self._data.append(value)
        return None

    def _dispatch(self) -> Event | None:
        name, data = self._name, "\n".join(self._data)
        self._name, self._data = "message", []
        if not data:
            return None
        try:
            decoded = json.loads(data)
        except ValueError:
            decoded = {"data": data}
        return Event(name, decoded if isinstance(decoded, dict) else {"data": decoded})


def final_error(progress: Progress) -> APIError | None:
    """The error a FAILED status stands for, else None."""
    if progress.status != "FAILED":
        return None
    return error_for(
        422,
        progress.error or "generation failed",
        body=dict(progress.raw),
        request_id=progress.request_id,
    )


def timed_out(request_id: str, timeout: float | None) -> GenerationTimeout:
    """The error of a wait that ran out (its job has been asked to cancel)."""
    waited = MAX_WAIT_S if timeout is None else timeout
    return GenerationTimeout(
        f"request {request_id} did not finish within {waited:g} s; it was cancelled",
        request_id=request_id,
    )


def new_idempotency_key() -> str:
    """A fresh ``Idempotency-Key``: one per submit, reused by that submit's retries."""
    return "kin-sdk-" + uuid.uuid4().hex
