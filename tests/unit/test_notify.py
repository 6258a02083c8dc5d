"""In-process job announcements."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from kinema.jobs.models import Job, NewJob, Status, inserted_job
from kinema.jobs.notify import RECENT, Notifier, Wake
from kinema.jobs.relay import MemoryHub
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


async def test_wake_ups_cross_between_replicas_of_one_hub_but_never_echo() -> None:
    hub = MemoryHub()
    here, there = Notifier(hub.relay()), Notifier(hub.relay())
    for notifier in (here, there):
        assert notifier._relay is not None
        await notifier._relay.start(notifier.deliver)
    cancels: list[str] = []
    there.on_cancel = cancels.append
    with there.watch("a") as watch:
        here.job_submitted()
        here.job_finished(_final("a"))
        here.cancel_requested("b")
        assert not there.work_available.is_set()  # delivered on the next loop turn
        await asyncio.sleep(0)
        assert there.work_available.is_set()
        assert watch.event.is_set() and watch.job is None  # the waiter reads the store
    assert cancels == ["b"]
    here.work_available.clear()
    there.job_submitted()
    await asyncio.sleep(0)
    assert here.work_available.is_set()
    assert there.recent("a") is None  # only the finishing replica knows the final job


async def test_a_resync_wakes_every_waiter_and_the_dispatcher() -> None:
    notifier = Notifier()
    with notifier.watch("a") as a, notifier.watch("b") as b:
        notifier.deliver(Wake.RESYNC, "")
        assert a.event.is_set() and b.event.is_set()
    assert notifier.work_available.is_set()
