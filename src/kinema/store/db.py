"""The database behind one small interface: run a *transaction function* (a plain function of a
SQLAlchemy ``Connection``) for reading or writing.

- :class:`SQLiteDatabase` (embedded): the standard-library driver. Transactions here are a
  few indexed statements that SQLite runs in tens of microseconds, far less than waking a thread
  (1–2 ms under load on a small VM) — so they run **inline on the event loop** on a connection
  that never waits: its busy timeout is 0, so when another connection (another process, or this
  process's fallback thread) holds the write lock, ``BEGIN IMMEDIATE`` fails at once and the
  transaction goes to ONE writer thread instead, which waits its turn with a normal busy
  timeout. The inline connection never checkpoints (the one thing a commit can do that is slow):
  every :data:`CHECKPOINT_EVERY` inline commits the writer thread checkpoints, and writes go
  through the thread (behind it) until it is done, so that it completes and the WAL rewinds.
  Reads run inline too, without a transaction (single statements on WAL snapshots). WAL,
  ``synchronous=NORMAL``, foreign keys, and ``BEGIN IMMEDIATE`` for writes so that a
  read→write upgrade can never fail.
- :class:`PostgresDatabase` (scale-out): asyncpg; the same functions run through ``run_sync``.

Repositories (``*/repository.py``) are plain functions of a ``Connection``; services compose them
into one transaction function, so "reserve credits + insert job" is one transaction everywhere.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, event
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
T = TypeVar("T")
CHECKPOINT_EVERY = 200
"""Inline commits between two passive WAL checkpoints (run on the writer thread)."""
Tx = Callable[[Connection], T]


class Database(Protocol):
    @property
    def dialect(self) -> str: ...

    async def read(self, fn: Tx[T]) -> T:
        """Run ``fn`` for reading (no write lock taken)."""

    async def write(self, fn: Tx[T]) -> T:
        """Run ``fn`` in one transaction: committed if it returns, rolled back if it raises."""

    async def migrate(self) -> None:
        """Bring the schema to the newest revision (idempotent)."""

    async def dispose(self) -> None: ...


def open_database(url: str, *, echo: bool = False) -> Database:
    """``sqlite:///path`` (``sqlite+aiosqlite:///path`` is accepted as an alias) or
    ``postgresql+asyncpg://user@host/db``."""
    if url.startswith("sqlite"):
        return SQLiteDatabase(url, echo=echo)
    return PostgresDatabase(url, echo=echo)


def sqlite_path(url: str) -> str:
    """The database file of a ``sqlite:///path`` URL; ``:memory:`` for an in-memory one."""
    return url.split(":///", 1)[1] if ":///" in url else ":memory:"


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def upgrade(connection: Connection) -> None:
    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, "head")


def _create_private(path: Path) -> None:
    """Create the database file owner-only (it holds key hashes and balances) before SQLite
    opens it with the process umask; its WAL and shared-memory files take its mode."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))


class SQLiteDatabase:
    def __init__(self, url: str, *, echo: bool = False) -> None:
        path = sqlite_path(url)
        if path != ":memory:":
            _create_private(Path(path))
        args = {"check_same_thread": False}
        # The writer thread (fallback writes, migrations, checkpoints) waits for locks.
        self._engine: Engine = create_sync_engine(
            f"sqlite:///{path}", echo=echo, connect_args={**args, "timeout": 30}, pool_size=1
        )
        # The event loop's connection never waits and never checkpoints.
        self._inline: Engine = create_sync_engine(
            f"sqlite:///{path}", echo=echo, connect_args={**args, "timeout": 0}, pool_size=2
        )
        for engine in (self._engine, self._inline):
            event.listen(engine, "connect", _sqlite_on_connect)
            event.listen(engine, "begin", _sqlite_on_begin)
        event.listen(self._inline, "connect", _no_autocheckpoint)
        self._reader = self._inline.execution_options(kinema_read=True)
        self._writer = self._inline.execution_options(kinema_begun=True)
        self._reading: Connection | None = None
        self._writing: Connection | None = None
        """The loop's two connections, opened on first use and kept (a pool checkout per
        transaction cost more than the transaction)."""
        self._writes = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kinema-sqlite-w")
        self._since_checkpoint = 0
        self._checkpoint: Future[None] | None = None

    @property
    def dialect(self) -> str:
        return "sqlite"

    async def read(self, fn: Tx[T]) -> T:
        # Reads here are indexed lookups or bounded scans (LIMIT) on a WAL snapshot. SQLite can
        # still answer BUSY in rare moments (another process recovering the WAL): then the read,
        # which has no side effects, is run again by the writer thread, which waits.
        conn = self._reading = _usable(self._reading, self._reader)
        try:
            return fn(conn)
        except (OperationalError, sqlite3.OperationalError) as exc:
            if not _is_busy(exc):
                raise
        finally:
            if conn.in_transaction():  # SQLAlchemy's autobegin; SQLite itself holds nothing
                conn.rollback()
        return await self._in_thread(self._read_sync, fn)

    async def write(self, fn: Tx[T]) -> T:
        if self._checkpoint is None or self._checkpoint.done():
            conn = self._begin_inline()
            if conn is not None:
                result = _run_begun(conn, fn)
                self._committed_inline()
                return result
        return await self._in_thread(self._write_sync, fn)

    def _begin_inline(self) -> Connection | None:
        """The loop's connection holding the write lock, or None when another connection holds
        it. Kept open between transactions; ``BEGIN IMMEDIATE`` goes straight to the driver."""
        conn = self._writing = _usable(self._writing, self._writer)
        try:
            conn.connection.driver_connection.execute("BEGIN IMMEDIATE")  # type: ignore[union-attr]
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc):
                raise
            return None
        return conn

    async def migrate(self) -> None:
        await self._in_thread(self._write_sync, upgrade)

    async def dispose(self) -> None:
        for conn in (self._reading, self._writing):
            if conn is not None:
                conn.close()
        self._reading = self._writing = None
        self._writes.shutdown(wait=True)
        self._engine.dispose()
        self._inline.dispose()

    async def _in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._writes, fn, *args)

    def _read_sync(self, fn: Tx[T]) -> T:
        with self._engine.execution_options(kinema_read=True).connect() as conn:
            return fn(conn)

    def _write_sync(self, fn: Tx[T]) -> T:
        with self._engine.begin() as conn:
            return fn(conn)

    def _committed_inline(self) -> None:
        self._since_checkpoint += 1
        if self._since_checkpoint >= CHECKPOINT_EVERY:
            self._since_checkpoint = 0
            self._checkpoint = self._writes.submit(self._checkpoint_sync)

    def _checkpoint_sync(self) -> None:
        # Outside any transaction (a checkpoint cannot run inside one).
        with self._engine.execution_options(kinema_read=True).connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")


def _run_begun(conn: Connection, fn: Tx[T]) -> T:
    """Run ``fn`` in the transaction already begun on the driver connection: commit if it
    returns, roll back if it raises. SQLAlchemy's own transaction object exists only if a
    statement of ``fn`` went through ``Connection.execute`` (its autobegin); it is ended too."""
    driver = conn.connection.driver_connection
    assert driver is not None
    try:
        result = fn(conn)
        driver.execute("COMMIT")
    except BaseException:
        if driver.in_transaction:  # also after a failed COMMIT: the next BEGIN must work
            driver.execute("ROLLBACK")
        if conn.in_transaction():
            conn.rollback()
        raise
    if conn.in_transaction():
        conn.commit()  # SQLite is out of its transaction already: the driver's commit is a no-op
    return result


def _usable(conn: Connection | None, engine: Engine) -> Connection:
    return (
        conn if conn is not None and not conn.closed and not conn.invalidated else engine.connect()
    )


def _is_busy(exc: OperationalError | sqlite3.OperationalError) -> bool:
    message = str(exc.orig if isinstance(exc, OperationalError) else exc)
    return "locked" in message or "busy" in message


def _no_autocheckpoint(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.execute("PRAGMA wal_autocheckpoint=0")


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Take transaction control from the driver so that "begin" below decides how to begin.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_on_begin(conn: Connection) -> None:
    # Reads run statement by statement in autocommit (WAL snapshots, no lock); writes take the
    # write lock up front (the loop's connection has taken it already).
    options = conn.get_execution_options()
    if not options.get("kinema_read") and not options.get("kinema_begun"):
        conn.connection.driver_connection.execute("BEGIN IMMEDIATE")  # type: ignore[union-attr]


class PostgresDatabase:
    def __init__(self, url: str, *, echo: bool = False) -> None:
        self._engine: AsyncEngine = create_async_engine(url, echo=echo, pool_pre_ping=True)

    @property
    def dialect(self) -> str:
        return "postgresql"

    async def read(self, fn: Tx[T]) -> T:
        async with self._engine.connect() as conn:
            return await conn.run_sync(fn)

    async def write(self, fn: Tx[T]) -> T:
        async with self._engine.begin() as conn:
            return await conn.run_sync(fn)

    async def migrate(self) -> None:
        await self.write(_upgrade_alone)

    async def dispose(self) -> None:
        await self._engine.dispose()


MIGRATION_LOCK = 0x6B696E656D61  # "kinema"
"""The advisory lock migrations hold: replicas starting together on a new database migrate
one after the other (the later ones find the schema current), instead of racing to create the
same tables."""


def _upgrade_alone(connection: Connection) -> None:
    connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
    upgrade(connection)
