"""Replica liveness on PostgreSQL: a session advisory lock per replica, seen by the others in
this database's ``pg_locks`` and gone the moment its process is killed; taken again after a
dropped connection."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator

import asyncpg
import pytest

from kinema.jobs.liveness import PostgresLiveness, new_id
from kinema.jobs.relay import asyncpg_dsn

pytestmark = pytest.mark.services

HOLD = """
import asyncio, sys
from kinema.jobs.liveness import PostgresLiveness

async def main() -> None:
    live = PostgresLiveness(sys.argv[1], sys.argv[2])
    await live.start()
    print("held" if live.locked.is_set() else "not held", flush=True)
    await asyncio.sleep(120)

asyncio.run(main())
"""


@contextlib.contextmanager
def _held(dsn: str, replica: str) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, dsn, replica], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        yield proc
    finally:
        proc.kill()
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()


async def _until_dead(live: PostgresLiveness, replica: str, within_s: float) -> float:
    begun = time.monotonic()
    while time.monotonic() - begun < within_s:
        if await live.dead([replica]) == {replica}:
            return time.monotonic() - begun
        await asyncio.sleep(0.02)
    raise AssertionError(f"{replica} still looks alive after {within_s} s")


async def test_a_killed_replica_is_dead_at_once(pg_url: str) -> None:
    dsn = asyncpg_dsn(pg_url)
    me = PostgresLiveness(dsn, new_id())
    await me.start()
    try:
        assert me.locked.is_set()
        other = new_id()
        with _held(dsn, other) as proc:
            assert await me.dead([other, me.id, "dispatcher-0123456789ab"]) == set()
            proc.kill()
            took = await _until_dead(me, other, within_s=5)
        assert took < 2.0  # PostgreSQL ends the session when the socket closes, not a lease later
        assert await me.dead([new_id()]) != set()  # never started: no lock, dead
    finally:
        await me.close()


async def test_a_lock_in_another_database_does_not_count(pg_url: str) -> None:
    """Tests (and tenants) share a PostgreSQL server: only this database's replicas count."""
    dsn = asyncpg_dsn(pg_url)
    other_db = dsn.rsplit("/", 1)[0] + "/postgres"
    me = PostgresLiveness(dsn, new_id())
    elsewhere = PostgresLiveness(other_db, new_id())
    await asyncio.gather(me.start(), elsewhere.start())
    try:
        assert elsewhere.locked.is_set()
        assert await me.dead([elsewhere.id]) == {elsewhere.id}
    finally:
        await asyncio.gather(me.close(), elsewhere.close())


async def test_a_dropped_connection_takes_the_lock_again(pg_url: str) -> None:
    dsn = asyncpg_dsn(pg_url)
    me, watcher = PostgresLiveness(dsn, new_id()), PostgresLiveness(dsn, new_id())
    await asyncio.gather(me.start(), watcher.start())
    try:
        assert me._conn is not None
        pid = me._conn.get_server_pid()
        admin = await asyncpg.connect(dsn)
        try:
            await admin.execute("SELECT pg_terminate_backend($1)", pid)
        finally:
            await admin.close()
        begun = time.monotonic()
        while time.monotonic() - begun < 20:  # noticed at once; reconnects after 0.5 s
            conn = me._conn
            if me.locked.is_set() and conn is not None and conn.get_server_pid() != pid:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the lock was not taken again")
        assert await watcher.dead([me.id]) == set()
        await me.close()
        await _until_dead(watcher, me.id, within_s=5)  # a clean stop releases it too
    finally:
        await asyncio.gather(me.close(), watcher.close())
