"""Retention: outputs are deleted after retention.output_ttl_s, requests (status/result) after
retention.request_ttl_s. Runs as a periodic task in every API process (idempotent)."""

from __future__ import annotations

import asyncio
import logging
import time

from sqlalchemy.ext.asyncio import AsyncEngine

from kinema.jobs import repository as repo
from kinema.settings import RetentionSettings
from kinema.storage.base import Storage

log = logging.getLogger(__name__)
BATCH = 500


async def cleanup_once(db: AsyncEngine, storage: Storage, *, now: float | None = None) -> int:
    """Delete expired outputs and expired requests; returns how many things were removed."""
    now = time.time() if now is None else now
    removed = 0
    async with db.connect() as conn:
        stale_outputs = await repo.outputs_expired(conn, now=now, limit=BATCH)
    for job in stale_outputs:
        await storage.delete_prefix(f"outputs/{job.id}")
        async with db.begin() as conn:
            await repo.forget_output(conn, job.id)
        removed += 1
    async with db.connect() as conn:
        stale_jobs = await repo.expired(conn, now=now, limit=BATCH)
    # A request row outlives its status TTL while its output is still kept (the row is how we
    # find the output); reads already answer 404 after expires_at.
    gone = [job.id for job in stale_jobs]
    for job_id in gone:
        await storage.delete_prefix(f"inputs/{job_id}")
    if gone:
        async with db.begin() as conn:
            await repo.delete_jobs(conn, gone)
    return removed + len(gone)


async def run_periodically(db: AsyncEngine, storage: Storage, settings: RetentionSettings) -> None:
    while True:
        try:
            await cleanup_once(db, storage)
        except Exception:
            log.exception("retention cleanup failed; retrying next period")
        await asyncio.sleep(settings.cleanup_interval_s)
