"""The embedded database: transactions inline on the event loop, the writer thread when another
connection holds the lock, checkpoints that keep the WAL from growing."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import Connection

from kinema.store.db import CHECKPOINT_EVERY, SQLiteDatabase, open_database

pytestmark = pytest.mark.unit


def _insert(value: int) -> Callable[[Connection], None]:
    def tx(conn: Connection) -> None:
        conn.exec_driver_sql("INSERT INTO t VALUES (?)", (value,))

    return tx


def _values(conn: Connection) -> list[int]:
    return list(conn.exec_driver_sql("SELECT x FROM t ORDER BY x").scalars())


async def _database(tmp_path: Path) -> SQLiteDatabase:
    db = open_database(f"sqlite:///{tmp_path}/k.db")
    assert isinstance(db, SQLiteDatabase)
    await db.write(lambda conn: conn.exec_driver_sql("CREATE TABLE t (x INTEGER)"))
    return db


async def test_a_write_waits_in_the_thread_while_another_connection_holds_the_lock(
    tmp_path: Path,
) -> None:
    db = await _database(tmp_path)
    other = sqlite3.connect(tmp_path / "k.db", isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO t VALUES (1)")
    threading.Timer(0.3, lambda: other.execute("COMMIT")).start()
    loop = asyncio.get_running_loop()
    started = loop.time()
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    beat = asyncio.create_task(ticker())
    await db.write(_insert(2))  # blocked by the other connection: must not block the loop
    beat.cancel()
    assert loop.time() - started >= 0.25
    assert ticks >= 10, "the event loop was blocked while the write waited for the lock"
    await db.write(_insert(3))  # the inline path works again afterwards
    assert await db.read(_values) == [1, 2, 3]
    other.close()
    await db.dispose()


async def test_a_failed_transaction_rolls_back(tmp_path: Path) -> None:
    db = await _database(tmp_path)

    def failing(conn: Connection) -> None:
        _insert(1)(conn)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await db.write(failing)
    await db.write(_insert(2))
    assert await db.read(_values) == [2]
    await db.dispose()


async def test_a_commit_that_fails_rolls_back_and_the_next_write_works(tmp_path: Path) -> None:
    # A deferred foreign key is checked at COMMIT: the commit itself fails.
    db = await _database(tmp_path)
    await db.write(
        lambda conn: conn.exec_driver_sql("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
    )
    await db.write(
        lambda conn: conn.exec_driver_sql(
            "CREATE TABLE child (p INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)"
        )
    )

    def orphan(conn: Connection) -> None:
        driver = conn.connection.driver_connection
        assert driver is not None
        driver.execute("INSERT INTO t VALUES (7)")
        driver.execute("INSERT INTO child VALUES (99)")  # no parent 99

    with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
        await db.write(orphan)
    await db.write(_insert(2))
    assert await db.read(_values) == [2]  # the failed transaction left nothing behind
    await db.dispose()


async def test_checkpoints_keep_the_wal_from_growing(tmp_path: Path) -> None:
    db = await _database(tmp_path)
    wal = tmp_path / "k.db-wal"
    for n in range(CHECKPOINT_EVERY * 10):
        await db.write(_insert(n))
    # Without checkpoints every commit appends a page (4 KiB): 2,000 commits would be ~8 MiB.
    assert wal.stat().st_size < CHECKPOINT_EVERY * 3 * 4096
    assert len(await db.read(_values)) == CHECKPOINT_EVERY * 10
    await db.dispose()
