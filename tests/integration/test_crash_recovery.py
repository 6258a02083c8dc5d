"""Crash recovery, proved in CI: a worker SIGKILLed mid-job again and again loses no job and
charges none twice — each lost run goes back to the queue at once (no lease wait), the worker is
restarted, and after every kill the books balance: balance = Σ ledger, one reservation per job,
a refund for each failed one, none for a completed one."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from kinema.store.tables import credit_ledger, jobs
from tests.conftest import Ctx, app_context, ledger_and_balance, make_settings, png, start_runner

pytestmark = pytest.mark.integration

KILLS = 20
JOBS = 12
B64 = base64.b64encode(png()).decode()


async def _books(c: Ctx, key_id: str) -> None:
    """The ledger invariant: it sums to the balance; every job has one reservation; FAILED
    jobs one refund, others none."""
    ledger, balance = await ledger_and_balance(c.svc, key_id)
    assert ledger == balance

    def rows(conn: object) -> tuple[dict[str, str], dict[tuple[str, str], int]]:
        states = {r.id: r.status for r in conn.execute(select(jobs.c.id, jobs.c.status))}  # type: ignore[attr-defined]
        counts = conn.execute(  # type: ignore[attr-defined]
            select(credit_ledger.c.job_id, credit_ledger.c.kind, func.count())
            .where(credit_ledger.c.job_id.is_not(None))
            .group_by(credit_ledger.c.job_id, credit_ledger.c.kind)
        )
        return states, {(r[0], r[1]): r[2] for r in counts}

    states, moves = await c.svc.db.read(rows)
    for job_id, status in states.items():
        assert moves.get((job_id, "reserve")) == 1, (job_id, moves)
        assert moves.get((job_id, "refund"), 0) == (1 if status == "FAILED" else 0)


async def test_a_worker_killed_twenty_times_loses_and_double_charges_nothing(
    tmp_path: Path,
) -> None:
    runner = await start_runner(["test-slow-video", "static-image"], tmp_path / "m")
    worker = runner.workers[0]
    settings = make_settings(
        tmp_path,
        engines={"preset": "custom", "video_preset": "test-slow-video"},
        jobs={"max_attempts": KILLS + 5, "poll_interval_s": 0.05},
    )
    settings.engines.image_preset = "static-image"
    try:
        async with app_context(settings, runner) as c:
            key = await c.key(credits=100)
            key_id = (await c.svc.keys.authenticate(key)).id
            h = {"x-api-key": key}
            body = {"start_image_url": B64, "prompt": "steps=8", "duration": "3"}
            ids = []
            for _ in range(JOBS):
                r = await c.client.post("/v2/kling-3-standard-image2video", json=body, headers=h)
                ids.append(r.json()["request_id"])
            deadline = time.monotonic() + 240
            recoveries: list[float] = []
            for _ in range(KILLS):
                await _until_running(c, deadline)
                pid = worker.pid
                assert pid is not None
                os.kill(pid, signal.SIGKILL)
                killed = time.monotonic()
                await _until_running(c, deadline, not_pid=pid)  # retried on the new worker
                recoveries.append(time.monotonic() - killed)
                await _books(c, key_id)
            for rid in ids:
                while (await c.svc.jobs.get(rid)).status.value != "COMPLETED":  # type: ignore[union-attr]
                    assert time.monotonic() < deadline, f"{rid} did not complete"
                    await asyncio.sleep(0.05)
            await _books(c, key_id)
            ledger, _ = await ledger_and_balance(c.svc, key_id)
            assert ledger == 100_000_000 - JOBS * 378_000  # each charged exactly once
            # Recovery is the restart, not a lease expiry (jobs.lease_s is 5 s here).
            assert sorted(recoveries)[len(recoveries) // 2] < settings.jobs.lease_s
    finally:
        await runner.close()


async def _until_running(c: Ctx, deadline: float, not_pid: int | None = None) -> None:
    """Until the worker (a new one, when ``not_pid``) has a job under way."""
    worker = c.svc.runner.workers[0]  # type: ignore[union-attr]
    while True:
        assert time.monotonic() < deadline, "no job ran"
        if worker.alive and worker.pid != not_pid and any(worker.has(j) for j in _held(c)):
            return
        await asyncio.sleep(0.02)


def _held(c: Ctx) -> list[str]:
    dispatcher = c.svc.dispatcher
    assert dispatcher is not None
    return list(dispatcher._held)  # the jobs this process holds
