"""A replica that stopped without handing its jobs back, on both stores: a dispatcher that finds
it gone (its liveness lock is not held) retries the jobs it ran now, not when their leases
expire, and fails and refunds the sync jobs whose clients it held; it leaves alone the jobs of
replicas that are alive or that it cannot judge."""

from __future__ import annotations

import asyncio
import base64
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, update

from kinema.api.endpoints import ENDPOINTS
from kinema.jobs.dispatcher import Dispatcher
from kinema.jobs.liveness import new_id, open_liveness
from kinema.jobs.models import Status
from kinema.jobs.service import CANCELLED, WAITER_LOST
from kinema.runners.local import LocalRunner
from kinema.store.tables import jobs
from tests.conftest import app_context, ledger_and_balance, make_settings, png

pytestmark = pytest.mark.integration
B64 = base64.b64encode(png()).decode()
LEASED = {"status": Status.PROCESSING.value, "attempts": 1, "progress": 0.0}


async def test_a_stopped_replicas_jobs_are_taken_over_at_once(
    tmp_path: Path, static_runner: LocalRunner
) -> None:
    settings = make_settings(tmp_path, jobs={"lease_s": 600, "max_attempts": 3})
    async with app_context(settings, static_runner) as c:
        assert c.svc.dispatcher is not None
        await c.svc.dispatcher.stop()  # this app claims nothing: the jobs are set up by hand
        key = await c.key(credits=10)
        key_id = (await c.svc.keys.authenticate(key)).id
        ids = []
        for _ in range(5):
            r = await c.client.post(
                "/v2/kling-3-image2image",
                json={"image_url": B64, "prompt": "x"},
                headers={"x-api-key": key},
            )
            assert r.status_code == 200, r.text
            ids.append(r.json()["request_id"])
        ran, queued_sync, running_sync, unjudged, alive_sync = ids
        dead = new_id()  # a replica that held no lock: gone
        alive = open_liveness(settings)
        await alive.start()
        far = time.time() + 600  # leases no one would wait out in a test
        changes: dict[str, dict[str, Any]] = {
            ran: {**LEASED, "lease_owner": dead, "lease_expires_at": far},
            queued_sync: {"sync": True, "waiter": dead},
            running_sync: {
                **LEASED,
                "lease_owner": dead,
                "lease_expires_at": far,
                "sync": True,
                "waiter": dead,
            },
            unjudged: {**LEASED, "lease_owner": "dispatcher-0123456789ab", "lease_expires_at": far},
            alive_sync: {"sync": True, "waiter": alive.id},
        }

        def set_up(conn: Connection) -> None:
            for job_id, values in changes.items():
                conn.execute(update(jobs).where(jobs.c.id == job_id).values(**values))

        await c.svc.db.write(set_up)
        liveness = open_liveness(settings)
        await liveness.start()
        dispatcher = Dispatcher(
            c.svc.db,
            c.svc.jobs,
            static_runner,
            c.svc.storage,
            settings.jobs,
            models={slug: endpoint.task.value for slug, endpoint in ENDPOINTS.items()},
            liveness=liveness,
        )
        dispatcher.start()
        try:
            begun = time.monotonic()
            while True:
                got = {job_id: await c.svc.jobs.get(job_id) for job_id in ids}
                if all(got[j] and got[j].status.final for j in ids if j != unjudged):  # type: ignore[union-attr]
                    break
                assert time.monotonic() - begun < 30, {j: g and g.status for j, g in got.items()}
                await asyncio.sleep(0.05)
        finally:
            await dispatcher.stop()
            await liveness.close()
            await alive.close()
        final = {job_id: job for job_id, job in got.items() if job is not None}
        assert final[ran].status is Status.COMPLETED and final[ran].attempts == 2
        assert final[alive_sync].status is Status.COMPLETED and final[alive_sync].attempts == 1
        assert (final[queued_sync].status, final[queued_sync].error) == (Status.FAILED, WAITER_LOST)
        assert final[queued_sync].attempts == 0  # never run
        assert final[running_sync].status is Status.FAILED
        assert final[running_sync].error == CANCELLED
        # Not of the replica form (an older version's lease): left to its lease.
        assert final[unjudged].status is Status.PROCESSING
        ledger, balance = await ledger_and_balance(c.svc, key_id)
        assert ledger == balance
        price = final[ran].price_micros
        assert balance == 10_000_000 - 3 * price  # ran, alive_sync and the unjudged one's hold
