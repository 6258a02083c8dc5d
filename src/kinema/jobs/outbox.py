"""SQL for the webhook outbox: a row written with its job, delivered once the job has ended.

The delivery loop (:mod:`kinema.jobs.webhooks`) reads the due rows, claims one for an attempt so
that no other process sends it meanwhile, and records each attempt's outcome.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, insert, or_, select, update

from kinema.jobs.models import Status, Webhook
from kinema.store.tables import jobs, webhooks


def insert_webhook(conn: Connection, job_id: str, hook: Webhook) -> None:
    conn.execute(insert(webhooks).values(job_id=job_id, url=hook.url, base_url=hook.base_url))


def due_webhooks(
    conn: Connection, *, now: float, max_attempts: int, limit: int
) -> list[tuple[str, Webhook, int]]:
    """(job id, webhook, attempts so far) of ended jobs whose webhook is due, oldest first."""
    rows = conn.execute(
        select(webhooks.c.job_id, webhooks.c.url, webhooks.c.base_url, webhooks.c.attempts)
        .join(jobs, jobs.c.id == webhooks.c.job_id)
        .where(
            webhooks.c.delivered_at.is_(None),
            webhooks.c.attempts < max_attempts,
            or_(webhooks.c.next_attempt_at.is_(None), webhooks.c.next_attempt_at <= now),
            jobs.c.status.in_([Status.COMPLETED.value, Status.FAILED.value]),
        )
        .order_by(jobs.c.finished_at)
        .limit(limit)
    )
    return [(r.job_id, Webhook(r.url, r.base_url), r.attempts) for r in rows]


def claim_webhook(
    conn: Connection, job_id: str, *, attempts: int, now: float, until: float
) -> bool:
    """Take a due delivery for one attempt (no other process takes it before ``until``)."""
    result = conn.execute(
        update(webhooks)
        .where(
            webhooks.c.job_id == job_id,
            webhooks.c.attempts == attempts,
            webhooks.c.delivered_at.is_(None),
            or_(webhooks.c.next_attempt_at.is_(None), webhooks.c.next_attempt_at <= now),
        )
        .values(next_attempt_at=until)
    )
    return result.rowcount == 1


def webhook_attempted(
    conn: Connection,
    job_id: str,
    *,
    delivered_at: float | None,
    next_attempt_at: float | None,
    error: str | None,
) -> None:
    conn.execute(
        update(webhooks)
        .where(webhooks.c.job_id == job_id)
        .values(
            attempts=webhooks.c.attempts + 1,
            delivered_at=delivered_at,
            next_attempt_at=next_attempt_at,
            last_error=error,
        )
    )


def webhook_state(conn: Connection, job_id: str) -> dict[str, Any] | None:
    row = conn.execute(select(webhooks).where(webhooks.c.job_id == job_id)).first()
    return None if row is None else dict(row._mapping)
