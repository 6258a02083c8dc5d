"""In-process job announcements."""

from __future__ import annotations

import dataclasses

import pytest

from kinema.jobs.models import Job, NewJob, Status, inserted_job
from kinema.jobs.notify import RECENT, Notifier
from tests.fixtures.specs import image_spec

pytestmark = pytest.mark.unit


def _final(job_id: str) -> Job:
    new = NewJob(id=job_id, key_id="k", model="m", spec=image_spec(job_id), price_micros=1)
    return dataclasses.replace(
        inserted_job(new, now=0.0, expires_at=1.0, lease=None), status=Status.COMPLETED
    )


async def test_a_waiter_that_registers_late_still_sees_the_finish() -> None:
    notifier = Notifier()
    notifier.job_finished(_final("a"))
    recent = notifier.recent("a")
    assert recent is not None and recent.status is Status.COMPLETED
    assert notifier.recent("b") is None


async def test_watchers_get_the_final_job_and_memory_is_bounded() -> None:
    notifier = Notifier()
    with notifier.watch("a") as watch:
        notifier.job_finished(_final("a"))
        assert watch.event.is_set() and watch.job is not None
    for n in range(RECENT + 10):
        notifier.job_finished(_final(f"j{n}"))
    assert notifier.recent("a") is None  # the oldest were forgotten
    assert notifier.recent(f"j{RECENT + 9}") is not None
