"""The integration suite runs twice: on the embedded job store (SQLite) and on PostgreSQL, each
PostgreSQL test in a database of its own. Apps built with ``make_settings`` use the store of
the run; a test that passes its own ``database`` keeps it. A module whose tests share one
served process (its own SQLite database, started once per module) or a test about SQLite
itself is marked ``embedded_only``."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest

from tests.conftest import DATABASE_ENV
from tests.fixtures.pg import Databases


@pytest.fixture(scope="session")
async def pg_databases() -> AsyncIterator[Databases]:
    databases = Databases()
    yield databases
    await databases.close()


@pytest.fixture(
    autouse=True,
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.services)],
)
async def job_store(request: pytest.FixtureRequest, pg_databases: Databases) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield "sqlite"
        return
    if request.node.get_closest_marker("embedded_only"):
        pytest.skip("embedded store only")
    url = await pg_databases.create()
    os.environ[DATABASE_ENV] = url
    try:
        yield "postgresql"
    finally:
        del os.environ[DATABASE_ENV]
        await pg_databases.drop(url)
