"""Retention: requests answer 404 once expired; the cleanup task deletes outputs, inputs and rows;
the SQLite schema built by the migrations equals the table definitions."""

from __future__ import annotations

import base64
import time

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from kinema.jobs import outbox
from kinema.jobs.retention import cleanup_once
from kinema.store.tables import metadata
from tests.conftest import Ctx, png, wait_status

pytestmark = pytest.mark.integration
DAY = 86_400


async def _completed_request(ctx: Ctx, **extra: str) -> tuple[str, dict[str, str]]:
    key = await ctx.key()
    h = {"x-api-key": key}
    body = {"image_url": base64.b64encode(png()).decode(), "prompt": "x", **extra}
    r = await ctx.client.post("/v2/kling-3-image2image", json=body, headers=h)
    await wait_status(ctx.client, key, r.json()["request_id"], "COMPLETED")
    return r.json()["request_id"], h


async def test_outputs_then_requests_expire(ctx: Ctx) -> None:
    rid, h = await _completed_request(ctx)
    job = await ctx.svc.jobs.get(rid)
    assert job is not None and job.output_key is not None
    files = ctx.svc.settings.storage_path
    assert (files / job.output_key).is_file()
    assert not (files / "inputs" / rid).exists()  # inputs go once the job is settled

    # Nothing is due yet.
    assert await cleanup_once(ctx.svc.db, ctx.svc.storage) == 0
    # A day later the request is gone for clients, but its output is kept (7 days).
    assert await cleanup_once(ctx.svc.db, ctx.svc.storage, now=time.time() + 2 * DAY) == 0
    assert (files / job.output_key).is_file()
    # After 8 days the output is deleted, then the request row and its inputs.
    assert await cleanup_once(ctx.svc.db, ctx.svc.storage, now=time.time() + 8 * DAY) == 2
    assert not (files / job.output_key).exists()
    assert not (files / "inputs" / rid).exists()
    assert await ctx.svc.jobs.get(rid) is None
    r = await ctx.client.get(f"/v2/requests/{rid}", headers=h)
    assert r.status_code == 404 and r.json() == {"error": f"Request {rid} not found"}


async def test_a_request_goes_with_its_webhook(ctx: Ctx) -> None:
    # A receiver that is not there: the delivery is still pending when the request expires.
    rid, _ = await _completed_request(ctx, webhook="http://127.0.0.1:9/hook")
    assert await ctx.svc.db.read(lambda conn: outbox.webhook_state(conn, rid)) is not None
    assert await cleanup_once(ctx.svc.db, ctx.svc.storage, now=time.time() + 8 * DAY) == 2
    assert await ctx.svc.jobs.get(rid) is None
    assert await ctx.svc.db.read(lambda conn: outbox.webhook_state(conn, rid)) is None


async def test_expired_request_is_404_before_cleanup(ctx: Ctx) -> None:
    rid, h = await _completed_request(ctx)
    from sqlalchemy import update

    from kinema.store.tables import jobs

    past = time.time() - 1
    await ctx.svc.db.write(
        lambda conn: conn.execute(update(jobs).where(jobs.c.id == rid).values(expires_at=past))
    )
    r = await ctx.client.get(f"/v2/requests/{rid}/status", headers=h)
    assert r.status_code == 404


@pytest.mark.embedded_only  # PostgreSQL's: tests/services/test_postgres.py
async def test_sqlite_migrations_match_the_tables(ctx: Ctx) -> None:
    diff = await ctx.svc.db.read(
        lambda conn: compare_metadata(MigrationContext.configure(conn), metadata)
    )
    assert diff == []
