"""Webhooks (*extension*): a request's ``webhook`` URL gets a signed POST when the request ends.

Durable and at least once: the webhook is written with the job (an outbox row, in the submit
transaction), and every API process delivers those whose jobs have ended (a due row is claimed
for one attempt first, so two processes do not send it at the same time). A receiver that does
not answer 2xx within ``webhooks.timeout_s`` is tried again after each of ``webhooks.retry_s``;
then the delivery is given up (``last_error`` keeps why). The timeout bounds the whole attempt,
not each read: a receiver that trickles its answer a byte at a time is cut off all the same.
Deliveries run concurrently, at most :data:`CONCURRENCY` per process and :data:`PER_HOST` to one
receiver, so a slow receiver holds a few slots for ``timeout_s`` at most and never delays the
others. A ``429`` or ``503`` with ``Retry-After`` moves the next retry later, to at most the
schedule's longest wait (it never adds attempts). The URL is called through the same
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
import email.utils
import functools
import hashlib
import hmac
import json
import logging
import time
import urllib.parse
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx

from kinema.billing.service import KeyService
from kinema.jobs import outbox
from kinema.jobs.bodies import result_body
from kinema.jobs.models import Status, Webhook
from kinema.jobs.service import JobService
from kinema.media.fetch import BlockedAddressError
from kinema.redact import redact_query
from kinema.settings import Settings
from kinema.storage.base import Storage
from kinema.store.db import Database

log = logging.getLogger(__name__)
BATCH = 50
"""Due deliveries read per poll."""
CONCURRENCY = 16
"""Deliveries in flight at once in one process."""
PER_HOST = 4
"""Deliveries in flight at once to one receiver (``host:port``)."""
RETRY_AFTER_STATUSES = (429, 503)


def secret_for(server_secret: bytes, key_id: str) -> bytes:
    """The signing key of ``key_id``'s webhooks."""
    return hmac.new(server_secret, b"webhook:" + key_id.encode(), hashlib.sha256).digest()


def sign(secret: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(secret, signed, hashlib.sha256).digest()).decode()


async def deliver_forever(
    *,
    db: Database,
    settings: Settings,
    secret: bytes,
    http: httpx.AsyncClient,
    storage: Storage,
    keys: KeyService,
    jobs: JobService,
) -> None:
    """Deliver due webhooks until cancelled (an API process's background task)."""
    sender = WebhookSender(
        db=db, settings=settings, secret=secret, http=http, storage=storage, keys=keys, jobs=jobs
    )
    await sender.run()


@dataclass(frozen=True)
class Outcome:
    """How one attempt went: ``error`` None when the receiver took it."""

    error: str | None = None
    retry_after_s: float | None = None
    """The receiver's ``Retry-After``, in seconds from now."""


class WebhookSender:
    """Delivers one process's share of due webhooks, each attempt a task of its own."""

    def __init__(
        self,
        *,
        db: Database,
        settings: Settings,
        secret: bytes,
        http: httpx.AsyncClient,
        storage: Storage,
        keys: KeyService,
        jobs: JobService,
    ) -> None:
        self.db = db
        self.settings = settings
        self.secret = secret
        self.http = http
        self.storage = storage
        self.keys = keys
        self.jobs = jobs
        self._running: dict[asyncio.Task[None], str] = {}
        """Attempts in flight, each with its receiver."""

    async def run(self) -> None:
        """Poll and deliver until cancelled; attempts in flight are cancelled with it (their claim
        runs out and the next poll, here or in another process, tries them again)."""
        try:
            while True:
                try:
                    await self.deliver_due()
                except Exception:
                    log.exception("webhook delivery failed; retrying next period")
                await asyncio.sleep(self.settings.webhooks.poll_interval_s)
        finally:
            for task in self._running:
                task.cancel()
            await asyncio.gather(*self._running, return_exceptions=True)

    async def deliver_due(self) -> int:
        """Start an attempt at each webhook due now, as far as :data:`CONCURRENCY` and
        :data:`PER_HOST` allow (the rest stay due for the next poll); returns how many."""
        if len(self._running) >= CONCURRENCY:
            return 0
        hooks = self.settings.webhooks
        now = time.time()
        most = len(hooks.retry_s) + 1
        due = await self.db.read(
            lambda conn: outbox.due_webhooks(conn, now=now, max_attempts=most, limit=BATCH)
        )
        until = now + 2 * hooks.timeout_s  # no other process takes it meanwhile
        busy = Counter(self._running.values())
        started = 0
        for job_id, hook, attempts in due:
            host = _receiver(hook.url)
            if len(self._running) >= CONCURRENCY:
                break
            if busy[host] >= PER_HOST:
                continue
            claim = functools.partial(
                outbox.claim_webhook, job_id=job_id, attempts=attempts, now=now, until=until
            )
            if await self.db.write(claim):
                task = asyncio.create_task(self._attempt(job_id, hook, attempts))
                self._running[task] = host
                task.add_done_callback(self._forget)
                busy[host] += 1
                started += 1
        return started

    def _forget(self, task: asyncio.Task[None]) -> None:
        del self._running[task]

    async def wait(self) -> None:
        """Until every attempt started so far has ended."""
        await asyncio.gather(*self._running, return_exceptions=True)

    async def _attempt(self, job_id: str, hook: Webhook, attempts: int) -> None:
        limit = self.settings.webhooks.timeout_s
        try:
            async with asyncio.timeout(limit):
                outcome = await self._post(job_id, hook)
        except TimeoutError:
            outcome = Outcome(f"no complete answer within {limit:g} s (webhooks.timeout_s)")
        except Exception as exc:  # counted as an attempt, so a bug cannot retry it forever
            log.exception("webhook of %s could not be sent", job_id)
            outcome = Outcome(f"internal error: {type(exc).__name__}")
        await self._record(job_id, hook, attempts, outcome)

    async def _record(self, job_id: str, hook: Webhook, attempts: int, outcome: Outcome) -> None:
        error = outcome.error
        wait = None
        if error is not None:
            wait = next_wait(self.settings.webhooks.retry_s, attempts, outcome.retry_after_s)
            then = "given up" if wait is None else f"retry in {wait:g} s"
            url = redact_query(hook.url)
            log.warning("webhook of %s to %s failed (%s); %s", job_id, url, error, then)
        now = time.time()
        await self.db.write(
            lambda conn: outbox.webhook_attempted(
                conn,
                job_id,
                delivered_at=now if error is None else None,
                next_attempt_at=None if wait is None else now + wait,
                error=error,
            )
        )

    async def _post(self, job_id: str, hook: Webhook) -> Outcome:
        """POST the job's end to ``hook.url``."""
        job = await self.jobs.get(job_id)
        if job is None:  # expired meanwhile: nothing left to tell
            return Outcome("the request has expired")
        data, _ = await result_body(hook.base_url, self, job)
        kind = "request.completed" if job.status is Status.COMPLETED else "request.failed"
        stamp = int(time.time())
        payload = {
            "type": kind,
            "timestamp": datetime.fromtimestamp(stamp, tz=UTC).isoformat().replace("+00:00", "Z"),
            "data": data,
        }
        body = json.dumps(payload).encode()
        message_id = f"msg_{job.id}"
        signature = sign(secret_for(self.secret, job.key_id), message_id, stamp, body)
        headers = {
            "content-type": "application/json",
            "webhook-id": message_id,
            "webhook-timestamp": str(stamp),
            "webhook-signature": signature,
        }
        try:
            async with self.http.stream(
                "POST",
                hook.url,
                content=body,
                headers=headers,
                timeout=self.settings.webhooks.timeout_s,
                follow_redirects=False,
            ) as response:  # its body is never read
                if response.is_success:
                    return Outcome()
                later = None
                if response.status_code in RETRY_AFTER_STATUSES:
                    later = retry_after_s(response.headers.get("retry-after"))
                return Outcome(f"HTTP {response.status_code}", later)
        except BlockedAddressError as exc:
            return Outcome(f"refused: {exc}")
        except httpx.HTTPError as exc:
            return Outcome(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)


def next_wait(schedule: Sequence[float], attempts: int, retry_after: float | None) -> float | None:
    """The wait before the next attempt, after the one numbered ``attempts`` (from 0) failed;
    None when the schedule is spent. A receiver's ``Retry-After`` makes it longer, up to the
    schedule's longest wait, so a receiver cannot park a delivery beyond what the operator set."""
    if attempts >= len(schedule):
        return None
    wait = schedule[attempts]
    if retry_after is not None:
        wait = max(wait, min(retry_after, max(schedule)))
    return wait


def retry_after_s(value: str | None, *, now: float | None = None) -> float | None:
    """``Retry-After`` (delay-seconds or an HTTP date) in seconds from ``now``; None if absent
    or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _receiver(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.hostname or ''}:{parts.port or parts.scheme}"
