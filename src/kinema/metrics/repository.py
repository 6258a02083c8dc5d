"""The metrics' one read of the job store: unfinished jobs counted by state and model."""

from __future__ import annotations

from sqlalchemy import Connection, func, select

from kinema.jobs.models import ACTIVE
from kinema.store.tables import jobs


def active_counts(conn: Connection) -> dict[tuple[str, str], int]:
    """(state, model slug) → jobs, for QUEUED and PROCESSING (finished jobs are counted as they
    settle; their rows only wait for retention). Served by the (status, created_at) index."""
    rows = conn.execute(
        select(jobs.c.status, jobs.c.model, func.count())
        .where(jobs.c.status.in_(ACTIVE))
        .group_by(jobs.c.status, jobs.c.model)
    )
    return {(status, model): int(count) for status, model, count in rows}
