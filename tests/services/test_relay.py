"""Wake-ups between replicas through PostgreSQL LISTEN/NOTIFY: delivered to the others, never
echoed, carried across a dropped connection, and what they buy end to end — a sync request
through an API-only replica answered by another replica's worker while polling is too slow to
find it."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from kinema.jobs.notify import Wake
from kinema.jobs.relay import PostgresRelay, asyncpg_dsn, open_relay
from kinema.runners.local import LocalRunner
from tests.conftest import (
    app_context,
    ledger_and_balance,
    make_settings,
    png,
    runner_fixture,
    wait_status,
)

pytestmark = pytest.mark.services
B64 = base64.b64encode(png()).decode()
SLOW_POLL = {"poll_interval_s": 30.0}
"""Polling too slow to find anything within a test: whatever arrives came by a wake-up."""
ENGINES = {"preset": "custom", "video_preset": "test-slow-video", "image_preset": "static-image"}
runner = runner_fixture("test-slow-video", "static-image")


class Inbox:
    def __init__(self) -> None:
        self.got: asyncio.Queue[tuple[Wake, str]] = asyncio.Queue()

    def __call__(self, wake: Wake, job_id: str) -> None:
        self.got.put_nowait((wake, job_id))

    async def next(self, timeout: float = 5.0) -> tuple[Wake, str]:
        async with asyncio.timeout(timeout):
            return await self.got.get()


@pytest.fixture
async def relays(pg_url: str) -> AsyncIterator[tuple[PostgresRelay, PostgresRelay]]:
    pair = PostgresRelay(asyncpg_dsn(pg_url)), PostgresRelay(asyncpg_dsn(pg_url))
    yield pair
    for relay in pair:
        await relay.close()


async def test_wake_ups_reach_the_other_replica_only(
    relays: tuple[PostgresRelay, PostgresRelay],
) -> None:
    a, b = relays
    inbox_a, inbox_b = Inbox(), Inbox()
    await a.start(inbox_a)
    await b.start(inbox_b)
    assert a.connected.is_set() and b.connected.is_set()
    a.publish(Wake.SUBMITTED, "")
    a.publish(Wake.FINISHED, "job-1")
    b.publish(Wake.CANCEL, "job-2")
    assert await inbox_b.next() == (Wake.SUBMITTED, "")
    assert await inbox_b.next() == (Wake.FINISHED, "job-1")
    assert await inbox_a.next() == (Wake.CANCEL, "job-2")
    await asyncio.sleep(0.2)
    assert inbox_a.got.empty() and inbox_b.got.empty()  # nothing echoed to its sender


async def test_a_dropped_connection_reconnects_and_resyncs(
    relays: tuple[PostgresRelay, PostgresRelay], pg_url: str
) -> None:
    a, b = relays
    inbox_a, inbox_b = Inbox(), Inbox()
    await a.start(inbox_a)
    await b.start(inbox_b)
    admin = await asyncpg.connect(asyncpg_dsn(pg_url))
    try:
        await admin.execute("SELECT pg_terminate_backend($1)", b._pid)
    finally:
        await admin.close()
    # b notices (at once, or at its next probe), reconnects and tells its waiters to look again.
    assert await inbox_b.next(timeout=30) == (Wake.RESYNC, "")
    assert b.connected.is_set()
    a.publish(Wake.FINISHED, "job-3")
    assert await inbox_b.next() == (Wake.FINISHED, "job-3")


async def test_an_unreachable_database_delays_wake_ups_but_never_start_up() -> None:
    relay = PostgresRelay("postgresql://postgres@127.0.0.1:1/none")
    t0 = time.monotonic()
    await relay.start(Inbox())
    assert not relay.connected.is_set()
    assert time.monotonic() - t0 < 10
    relay.publish(Wake.SUBMITTED, "")  # queued, never raises
    await relay.close()


async def test_only_postgresql_with_the_relay_on_gets_one(tmp_path: Path, pg_url: str) -> None:
    assert open_relay(make_settings(tmp_path)) is None  # SQLite
    assert isinstance(open_relay(make_settings(tmp_path, database={"url": pg_url})), PostgresRelay)
    off = make_settings(tmp_path, database={"url": pg_url}, jobs={"relay": False})
    assert open_relay(off) is None


async def test_a_sync_request_through_an_api_only_replica_is_woken_by_the_worker_replica(
    tmp_path: Path, pg_url: str, runner: LocalRunner
) -> None:
    api_only = make_settings(
        tmp_path / "a",
        database={"url": pg_url},
        engines={**ENGINES, "workers": 0},
        jobs=SLOW_POLL,
    )
    worker = make_settings(
        tmp_path / "b", database={"url": pg_url}, engines=ENGINES, jobs=SLOW_POLL
    )
    async with app_context(worker, runner) as b, app_context(api_only, None) as a:
        key = await a.key(credits=100)
        headers = {"x-api-key": key}
        body = {"image_url": B64, "prompt": "a harbour at dawn"}
        for _ in range(3):
            # The worker's dispatcher is woken by the submit, the waiting request by the
            # settle; with polling alone neither would happen within the test's timeout.
            t0 = time.monotonic()
            r = await a.client.post("/v1/kling-3-image2image", json=body, headers=headers)
            assert r.status_code == 200, r.text
            assert r.headers["content-type"] == "image/png"
            assert time.monotonic() - t0 < SLOW_POLL["poll_interval_s"]
        # A cancel asked through the API-only replica stops a run on the other one.
        video = {"start_image_url": B64, "prompt": "steps=100000", "duration": "3"}
        r = await a.client.post("/v2/kling-3-standard-image2video", json=video, headers=headers)
        request_id = r.json()["request_id"]
        await wait_status(a.client, key, request_id, "PROCESSING", timeout=30)
        await a.client.post(f"/v2/requests/{request_id}/cancel", headers=headers)
        r = await wait_status(a.client, key, request_id, "FAILED", timeout=30)
        assert "cancelled" in r.json()["error"]
        key_id = (await a.svc.keys.authenticate(key)).id
        ledger, balance = await ledger_and_balance(b.svc, key_id)
        assert ledger == balance
