"""Which of the processes sharing the job store are still running.

Each process (a *replica*) holds a lock on its own id that the operating system or PostgreSQL
lets go of the moment the process dies — a SIGKILL, an out-of-memory kill, a crash. So when a
replica is gone the others know at once, instead of after its leases expire
(``jobs.lease_s``): the jobs it was running go back to the queue, and the sync requests whose
connections it held (whose clients can no longer be answered) are failed and refunded rather
than run and charged (:meth:`kinema.jobs.dispatcher.Dispatcher` sweeps both).

- :class:`FileLiveness` (embedded SQLite: the processes that share its file share a machine):
  ``<database>.replicas/<id>``, held with ``flock``.
- :class:`PostgresLiveness` (scale-out): a session advisory lock on a connection of its own,
  seen by the others in ``pg_locks`` (for this database only); reconnected, and the lock taken
  again, if the connection drops.
- :class:`NoLiveness`: an in-memory database (nothing outside this process shares it), or
  ``jobs.liveness = false``: no other replica is ever known dead, and leases decide.

Only ids of this module's form are judged; anything else (a lease taken by an older version),
or any id while the answer cannot be had (the database is unreachable), is not dead: the lease
decides, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import re
import secrets
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from kinema.jobs.relay import CONNECT_TIMEOUT_S, KEEPALIVE_S, asyncpg_dsn, keep_connected
from kinema.settings import Settings
from kinema.store.db import sqlite_path

if TYPE_CHECKING:
    import asyncpg

log = logging.getLogger(__name__)

_ID = re.compile(r"replica-([0-9a-f]{16})")


def new_id(*, judged: bool = True) -> str:
    """A fresh replica id: ``replica-`` and 16 hex digits (64 random bits) — or, for a process
    that holds no lock (``judged=False``), ``process-`` and 16 hex digits, which no replica ever
    takes for a stopped one."""
    return f"{'replica' if judged else 'process'}-{secrets.token_hex(8)}"


def lock_key(replica: str) -> int | None:
    """The PostgreSQL advisory-lock key of a replica id (a signed 64-bit integer); None for an
    id not of :func:`new_id`'s form."""
    match = _ID.fullmatch(replica)
    if match is None:
        return None
    value = int(match.group(1), 16)
    return value - (1 << 64) if value >= 1 << 63 else value


class Liveness(Protocol):
    @property
    def id(self) -> str:
        """This process's replica id: its dispatcher's lease owner, its sync jobs' waiter."""

    async def start(self) -> None:
        """Hold this replica's lock (from now until :meth:`close`)."""

    async def close(self) -> None: ...

    async def dead(self, replicas: Collection[str]) -> set[str]:
        """Those of ``replicas`` known to have stopped; never this one, never an id of another
        form, none when it cannot be told now."""


def open_liveness(settings: Settings) -> Liveness:
    """The liveness the job store allows (see the module's docstring)."""
    url = settings.database_url
    if url.startswith("postgresql") and settings.jobs.liveness:
        return PostgresLiveness(asyncpg_dsn(url), new_id())
    path = sqlite_path(url)
    if not settings.jobs.liveness or path == ":memory:":
        return NoLiveness(new_id(judged=False))
    return FileLiveness(Path(path).with_name(Path(path).name + ".replicas"), new_id())


class NoLiveness:
    def __init__(self, replica: str) -> None:
        self._id = replica

    @property
    def id(self) -> str:
        return self._id

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def dead(self, replicas: Collection[str]) -> set[str]:
        return set()


class FileLiveness:
    """One file per running replica in ``directory``, locked (``flock``) by its process for its
    lifetime; a file whose lock can be taken belongs to a replica that is gone (and is removed).
    The descriptor is not inherited by child processes (Python opens it close-on-exec), so a
    worker that outlives its server does not keep the server looking alive."""

    def __init__(self, directory: Path, replica: str) -> None:
        self._dir = directory
        self._id = replica
        self._fd: int | None = None

    @property
    def id(self) -> str:
        return self._id

    async def start(self) -> None:
        self._dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self._dir / self._id, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new id: nobody else holds it
        self._fd = fd

    async def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                (self._dir / self._id).unlink()
            os.close(self._fd)
            self._fd = None

    async def dead(self, replicas: Collection[str]) -> set[str]:
        return {r for r in replicas if r != self._id and lock_key(r) is not None and self._gone(r)}

    def _gone(self, replica: str) -> bool:
        path = self._dir / replica
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            return True  # never started here, or already found gone (and removed)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                log.warning("replica liveness: cannot check %s (%s)", path, exc)
            return False  # held: running (or not to be judged)
        try:
            path.unlink(missing_ok=True)
        finally:
            os.close(fd)
        return True


_HELD = """
SELECT (l.classid::bigint << 32) | l.objid::bigint
FROM pg_locks AS l JOIN pg_database AS d ON d.oid = l.database
WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted
  AND d.datname = current_database()
"""
"""The 64-bit keys of the advisory locks held in this database (``pg_locks`` splits a key into
two unsigned 32-bit halves)."""


class PostgresLiveness:
    """``pg_advisory_lock(key)`` held on a connection of its own; a replica whose key no session
    of this database holds has stopped (PostgreSQL ends a dead client's session, and its locks,
    as soon as the connection closes)."""

    def __init__(self, dsn: str, replica: str) -> None:
        key = lock_key(replica)
        assert key is not None, replica
        self._dsn = dsn
        self._id = replica
        self._key = key
        self._conn: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._busy = asyncio.Lock()
        """One statement at a time on the connection (asyncpg allows no more)."""
        self.locked = asyncio.Event()

    @property
    def id(self) -> str:
        return self._id

    async def start(self) -> None:
        """Connect in the background, waiting for the lock up to :data:`CONNECT_TIMEOUT_S`."""
        self._task = asyncio.create_task(self._forever(), name="kinema-liveness")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                await self.locked.wait()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def dead(self, replicas: Collection[str]) -> set[str]:
        import asyncpg

        keys = {r: lock_key(r) for r in replicas if r != self._id}
        judged = {r: k for r, k in keys.items() if k is not None}
        conn = self._conn
        if not judged or conn is None or not self.locked.is_set():
            return set()  # without our own lock, our view is not to be trusted either
        try:
            async with self._busy:
                rows = await conn.fetch(_HELD, timeout=CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("replica liveness: cannot read PostgreSQL's locks (%s)", exc)
            return set()
        held = {row[0] for row in rows}
        return {r for r, k in judged.items() if k not in held}

    async def _forever(self) -> None:
        await keep_connected(self._dsn, "replica liveness", self._hold, self._lost)

    def _lost(self) -> None:
        self.locked.clear()
        self._conn = None

    async def _hold(self, conn: asyncpg.Connection, _reconnect: bool) -> None:
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _conn: lost.set())
        await conn.execute("SELECT pg_advisory_lock($1)", self._key)
        self._conn = conn
        self.locked.set()
        while not lost.is_set():  # a dead connection would hold nothing and say nothing
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(lost.wait(), KEEPALIVE_S)
            async with self._busy:
                await conn.execute("SELECT 1", timeout=CONNECT_TIMEOUT_S)
        raise OSError("the connection was closed")
