"""GET /readyz: 200 with every check when the engines, the store and the storage answer; 503
naming what does not, each check bounded in time. Public, like /healthz."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kinema.api import health
from kinema.errors import StorageUnavailable
from tests.conftest import Ctx, app_context, make_settings

pytestmark = pytest.mark.integration


async def test_ready_when_engines_store_and_storage_answer(ctx: Ctx) -> None:
    r = await ctx.client.get("/readyz")  # no key
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "ready"
    assert {name: check["ok"] for name, check in body["checks"].items()} == {
        "engines": True,
        "store": True,
        "storage": True,
    }
    assert body["checks"]["engines"]["detail"] == "all: 1 worker(s)"
    assert (await ctx.client.get("/healthz")).json() == {
        "status": "ok",
        "idempotency": ["v1", "v2"],
    }


async def test_an_api_only_replica_is_ready_and_says_so(tmp_path: Path) -> None:
    async with app_context(make_settings(tmp_path, engines={"workers": 0}), None) as ctx:
        r = await ctx.client.get("/readyz")
        assert r.status_code == 200, r.text
        assert r.json()["checks"]["engines"]["detail"].startswith("API-only replica")


class DownStorage:
    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"readiness used {name}, not exists")

    async def exists(self, key: str) -> bool:
        raise StorageUnavailable("the storage bucket b is unreachable: connection refused")


class HangingStore:
    dialect = "sqlite"

    async def read(self, fn: Any) -> Any:
        await asyncio.sleep(3600)


@dataclass
class DeadPool:
    name: str = "image"
    tasks: frozenset[str] = frozenset({"image-to-image"})
    capacity: int = 0


@dataclass
class DeadRunner:
    pools: tuple[DeadPool, ...] = (DeadPool(),)


async def test_a_storage_down_is_a_503_naming_it(ctx: Ctx) -> None:
    storage, ctx.svc.storage = ctx.svc.storage, DownStorage()  # type: ignore[assignment]
    try:
        r = await ctx.client.get("/readyz")
    finally:
        ctx.svc.storage = storage
    assert r.status_code == 503, r.text
    body = r.json()
    assert body["status"] == "not ready"
    assert body["error"] == (
        "not ready: storage: the storage bucket b is unreachable: connection refused"
    )
    assert body["checks"]["storage"]["ok"] is False
    assert body["checks"]["store"]["ok"] is body["checks"]["engines"]["ok"] is True


async def test_a_store_that_does_not_answer_fails_within_the_bound(
    ctx: Ctx, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(health, "CHECK_TIMEOUT_S", 0.2)
    db, ctx.svc.db = ctx.svc.db, HangingStore()  # type: ignore[assignment]
    try:
        started = asyncio.get_running_loop().time()
        r = await ctx.client.get("/readyz")
        took = asyncio.get_running_loop().time() - started
    finally:
        ctx.svc.db = db
    assert r.status_code == 503, r.text
    assert r.json()["error"] == "not ready: store: no answer within 0.2 s"
    assert took < 2


async def test_a_pool_with_no_worker_left_is_not_ready(ctx: Ctx) -> None:
    runner, ctx.svc.runner = ctx.svc.runner, DeadRunner()  # type: ignore[assignment]
    try:
        r = await ctx.client.get("/readyz")
    finally:
        ctx.svc.runner = runner
    assert r.status_code == 503, r.text
    assert r.json()["error"] == "not ready: engines: no worker can take a job in pool(s) image"
