"""Webhooks (*extension*): a request's ``webhook`` URL gets a signed POST when the request ends.

Durable and at least once: the webhook is written with the job (an outbox row, in the submit
transaction), and every API process delivers those whose jobs have ended (a due row is claimed
for one attempt first, so two processes do not send it at the same time). A receiver that does
not answer 2xx within ``webhooks.timeout_s`` is tried again after each of ``webhooks.retry_s``;
then the delivery is given up (``last_error`` keeps why). The URL is called through the same
address policy as input fetches: private, loopback and link-local targets are refused unless
``fetch.allow_hosts`` lists them; redirects are not followed.

Signed as Standard Webhooks do: headers ``webhook-id`` (``msg_<request id>``, the same on every
attempt, to deduplicate), ``webhook-timestamp`` (UNIX seconds) and ``webhook-signature``
(``v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">``), keyed by the calling key's own
webhook secret (``GET /v2/webhooks/secret``; derived from the server secret and the key id, so
no other key can sign for it). The body: ``{"type": "request.completed" | "request.failed",
"timestamp", "data": <the result URL's body>}``.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import json
import logging
import time
from datetime import UTC, datetime
from typing import Annotated

import httpx
from fastapi import APIRouter, Depends, Request

from kinema.api.deps import Services, api_key, services
from kinema.api.schemas import ErrorResponse
from kinema.jobs import repository as repo
from kinema.jobs.models import Status, Webhook
from kinema.jobs.routes import result_body
from kinema.media.fetch import BlockedAddressError

log = logging.getLogger(__name__)
router = APIRouter()
BATCH = 50


def secret_for(server_secret: bytes, key_id: str) -> bytes:
    """The signing key of ``key_id``'s webhooks."""
    return hmac.new(server_secret, b"webhook:" + key_id.encode(), hashlib.sha256).digest()


def sign(secret: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(secret, signed, hashlib.sha256).digest()).decode()


@router.get(
    "/v2/webhooks/secret",
    responses={401: {"model": ErrorResponse}},
    summary="The calling key's webhook signing secret (extension)",
)
async def webhook_secret(
    request: Request, svc: Annotated[Services, Depends(services)]
) -> dict[str, str]:
    key = await svc.keys.authenticate(api_key(request))
    encoded = base64.b64encode(secret_for(svc.secret, key.id)).decode()
    return {"secret": f"whsec_{encoded}"}


async def deliver_forever(svc: Services) -> None:
    while True:
        try:
            await deliver_due(svc)
        except Exception:
            log.exception("webhook delivery failed; retrying next period")
        await asyncio.sleep(svc.settings.webhooks.poll_interval_s)


async def deliver_due(svc: Services) -> int:
    """One attempt at every webhook due now; returns how many were attempted here."""
    settings = svc.settings.webhooks
    now = time.time()
    most = len(settings.retry_s) + 1
    due = await svc.db.read(
        lambda conn: repo.due_webhooks(conn, now=now, max_attempts=most, limit=BATCH)
    )
    until = now + 2 * settings.timeout_s  # no other process takes it meanwhile
    attempted = 0
    for job_id, hook, attempts in due:
        claim = functools.partial(
            repo.claim_webhook, job_id=job_id, attempts=attempts, now=now, until=until
        )
        if await svc.db.write(claim):
            await _attempt(svc, job_id, hook, attempts)
            attempted += 1
    return attempted


async def _attempt(svc: Services, job_id: str, hook: Webhook, attempts: int) -> None:
    try:
        error = await _post(svc, job_id, hook)
    except Exception as exc:  # counted as an attempt, so a bug cannot retry it forever
        log.exception("webhook of %s could not be sent", job_id)
        error = f"internal error: {type(exc).__name__}"
    retry = svc.settings.webhooks.retry_s
    now = time.time()
    later = None if error is None or attempts >= len(retry) else now + retry[attempts]
    if error is not None:
        outcome = f"retry in {retry[attempts]:g} s" if later else "given up"
        log.warning("webhook of %s to %s failed (%s); %s", job_id, hook.url, error, outcome)
    await svc.db.write(
        lambda conn: repo.webhook_attempted(
            conn,
            job_id,
            delivered_at=now if error is None else None,
            next_attempt_at=later,
            error=error,
        )
    )


async def _post(svc: Services, job_id: str, hook: Webhook) -> str | None:
    """POST the job's end to ``hook.url``; None when the receiver took it, else why not."""
    job = await svc.jobs.get(job_id)
    if job is None:  # expired meanwhile: nothing left to tell
        return "the request has expired"
    data, _ = await result_body(hook.base_url, svc, job)
    kind = "request.completed" if job.status is Status.COMPLETED else "request.failed"
    stamp = int(time.time())
    payload = {
        "type": kind,
        "timestamp": datetime.fromtimestamp(stamp, tz=UTC).isoformat().replace("+00:00", "Z"),
        "data": data,
    }
    body = json.dumps(payload).encode()
    message_id = f"msg_{job.id}"
    headers = {
        "content-type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(stamp),
        "webhook-signature": sign(secret_for(svc.secret, job.key_id), message_id, stamp, body),
    }
    try:
        async with svc.http.stream(
            "POST",
            hook.url,
            content=body,
            headers=headers,
            timeout=svc.settings.webhooks.timeout_s,
            follow_redirects=False,
        ) as response:  # its body is never read
            if response.is_success:
                return None
            return f"HTTP {response.status_code}"
    except BlockedAddressError as exc:
        return f"refused: {exc}"
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
