"""Retention: outputs are deleted after retention.output_ttl_s, requests (status/result) after
retention.request_ttl_s. Runs as a periodic task in every API process (idempotent)."""

from __future__ import annotations

import asyncio
import functools
import logging
import time

from kinema.jobs import repository as repo
from kinema.settings import RetentionSettings
from kinema.storage.base import Storage
from kinema.store.db import Database

log = logging.getLogger(__name__)
BATCH = 500


async def cleanup_once(db: Database, storage: Storage, *, now: float | None = None) -> int:
    """Delete expired outputs and expired requests; returns how many things were removed."""
    at = time.time() if now is None else now
    stale_outputs = await db.read(lambda conn: repo.outputs_expired(conn, now=at, limit=BATCH))
    for job in stale_outputs:
        await storage.delete_prefix(f"outputs/{job.id}")
        await db.write(functools.partial(repo.forget_output, job_id=job.id))
    # A request row outlives its status TTL while its output is still kept (the row is how we
    # find the output); reads already answer 404 after expires_at.
    gone = [job.id for job in await db.read(lambda c: repo.expired(c, now=at, limit=BATCH))]
    for job_id in gone:
        await storage.delete_prefix(f"inputs/{job_id}")
    if gone:
        await db.write(lambda conn: repo.delete_jobs(conn, gone))
    return len(stale_outputs) + len(gone)


async def run_periodically(db: Database, storage: Storage, settings: RetentionSettings) -> None:
    while True:
        try:
            await cleanup_once(db, storage)
        except Exception:
            log.exception("retention cleanup failed; retrying next period")
        await asyncio.sleep(settings.cleanup_interval_s)
