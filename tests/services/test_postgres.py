"""The job store, billing and both request paths on PostgreSQL (asyncpg), including concurrent
claims with FOR UPDATE SKIP LOCKED."""

from __future__ import annotations

import asyncio
import base64
import time
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection

from kinema.jobs import outbox
from kinema.jobs import repository as repo
from kinema.jobs.models import NewJob
from kinema.runners.local import LocalRunner
from kinema.store.db import open_database
from kinema.store.tables import metadata
from tests.conftest import app_context, ledger_and_balance, make_settings, png, wait_status
from tests.fixtures.specs import image_spec

pytestmark = pytest.mark.services
B64 = base64.b64encode(png()).decode()


async def test_replicas_starting_together_migrate_one_after_the_other(pg_url: str) -> None:
    """Three processes' first start on a new database: each migrates, none fails."""
    dbs = [open_database(pg_url) for _ in range(3)]
    try:
        await asyncio.gather(*(db.migrate() for db in dbs))
        diff = await dbs[0].read(
            lambda conn: compare_metadata(MigrationContext.configure(conn), metadata)
        )
        assert diff == []
    finally:
        for db in dbs:
            await db.dispose()


async def test_migrations_match_the_tables(pg_url: str) -> None:
    db = open_database(pg_url)
    await db.migrate()
    await db.migrate()  # idempotent
    diff = await db.read(lambda conn: compare_metadata(MigrationContext.configure(conn), metadata))
    await db.dispose()
    assert diff == []


async def test_both_paths_on_postgres(
    pg_url: str, tmp_path: Path, static_runner: LocalRunner
) -> None:
    hooks = {"poll_interval_s": 0.05, "retry_s": [60]}
    settings = make_settings(tmp_path, database={"url": pg_url}, webhooks=hooks)
    async with app_context(settings, static_runner) as c:
        key = await c.key(credits=1)
        h = {"x-api-key": key}
        body = {"image_url": B64, "prompt": "x"}
        r = await c.client.post("/v1/kling-3-image2image", json=body, headers=h)
        assert r.status_code == 200, r.text
        # Its webhook goes nowhere (nothing listens on port 9): one attempt, recorded.
        hooked = {**body, "webhook": "http://127.0.0.1:9/hook"}
        rid = (await c.client.post("/v2/kling-3-image2image", json=hooked, headers=h)).json()[
            "request_id"
        ]
        await wait_status(c.client, key, rid, "COMPLETED")
        for _ in range(100):
            state = await c.svc.db.read(lambda conn: outbox.webhook_state(conn, rid))
            if state is not None and state["attempts"]:
                break
            await asyncio.sleep(0.05)
        assert state is not None and state["attempts"] == 1 and state["delivered_at"] is None
        assert "Connect" in state["last_error"]
        r = await c.client.get("/v1/get-user-credits", headers=h)
        assert r.json()["credits"] == pytest.approx(1 - 2 * 0.035)
        key_id = (await c.svc.keys.authenticate(key)).id
        ledger, balance = await ledger_and_balance(c.svc, key_id)
        assert ledger == balance == pytest.approx(1_000_000 - 2 * 35_000)


async def test_concurrent_claims_never_take_the_same_job(pg_url: str, tmp_path: Path) -> None:
    db = open_database(pg_url)
    await db.migrate()
    from kinema.billing.service import KeyService

    record = (await KeyService(db, b"s").create(credits=100)).record
    now = time.time()

    def insert_all(conn: Connection) -> None:
        for i in range(40):
            repo.insert_job(
                conn,
                NewJob(
                    id=f"job-{i:02d}",
                    key_id=record.id,
                    model="m",
                    spec=image_spec(),
                    price_micros=0,
                ),
                now=now + i * 1e-3,
                expires_at=now + 3600,
            )

    await db.write(insert_all)

    async def claimer(owner: str) -> list[str]:
        taken: list[str] = []
        for _ in range(10):
            jobs = await db.write(
                lambda conn: repo.claim(
                    conn, owner=owner, limit=3, now=time.time(), lease_s=60, max_attempts=3
                )
            )
            taken += [j.id for j in jobs]
        return taken

    results = await asyncio.gather(*(claimer(f"d{n}") for n in range(4)))
    await db.dispose()
    flat = [job for taken in results for job in taken]
    assert len(flat) == len(set(flat)) == 40
