"""``GET /v2/requests/{id}/events`` (*extension*): a request's status as Server-Sent Events, so a
client can follow a job without polling.

Each ``status`` event carries exactly the status URL's body (``FAILED`` with its error included);
one is sent at once and another at every change of status, progress, phase or queue position,
read from the job store every ``jobs.poll_interval_s`` or at once when this process finishes the
job (so a job run by another replica is followed too). A completed job's last events are its
``status`` and a ``result`` event with the result URL's body (the output's URL); then the stream
ends. So it does after a ``FAILED`` status, and with an ``error`` event if the request expires
meanwhile. An idle stream gets a comment line every ``KEEPALIVE_S`` so that proxies keep it open.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Protocol

from kinema.errors import NotFound
from kinema.jobs.bodies import StatusSources, result_body, status_body
from kinema.jobs.models import Job, Status

KEEPALIVE_S = 15.0


class EventSources(StatusSources, Protocol):
    """What the stream reads: the status body's parts (the settings give the poll interval)."""


async def stream(root: str, svc: EventSources, job: Job) -> AsyncIterator[str]:
    """The event stream of ``job`` (URLs under ``root``)."""
    sent = ""
    quiet_since = time.monotonic()
    while True:
        body, _ = await status_body(root, svc, job)
        text = json.dumps(body)
        if text != sent:
            sent, quiet_since = text, time.monotonic()
            yield _event("status", text)
        if job.status.final:
            if job.status is Status.COMPLETED:
                result, _ = await result_body(root, svc, job)
                yield _event("result", json.dumps(result))
            return
        await _next_change(svc, job.id)
        if time.monotonic() - quiet_since >= KEEPALIVE_S:
            quiet_since = time.monotonic()
            yield ": keep-alive\n\n"
        try:
            job = await svc.jobs.get_for_key(job.id, job.key_id)
        except NotFound as exc:  # expired while followed
            yield _event("error", json.dumps({"error": exc.message}))
            return


async def _next_change(svc: EventSources, job_id: str) -> None:
    """Until this process announces the job final, or one poll interval."""
    with svc.jobs.notifier.watch(job_id) as watch, contextlib.suppress(TimeoutError):
        async with asyncio.timeout(svc.settings.jobs.poll_interval_s):
            await watch.event.wait()


def _event(name: str, data: str) -> str:
    return f"event: {name}\ndata: {data}\n\n"
