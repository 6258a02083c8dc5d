"""Carrying wake-ups (:class:`~kinema.jobs.notify.Wake`) between the replicas that share one job
store.

- :class:`MemoryRelay` (embedded): replicas in one process joined by a :class:`MemoryHub`
  (a single ``kinema serve`` needs no relay at all: its notifier wakes its own waiters).
- :class:`PostgresRelay` (scale-out): PostgreSQL ``LISTEN/NOTIFY`` on one connection of its own,
  kept open and reconnected with backoff; a reconnect wakes every local waiter (anything could
  have been missed meanwhile) and polling covers the gap.

A wake-up is published after the transaction that caused it committed, so a replica woken by
it reads the change. Publishing never blocks or raises: a wake-up that cannot be sent is
dropped, and the others find the change by polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy.engine import make_url

from kinema.jobs.notify import Wake
from kinema.settings import Settings

if TYPE_CHECKING:
    import asyncpg

log = logging.getLogger(__name__)

Deliver = Callable[[Wake, str], None]
"""Called with each wake-up from another replica (on the event loop)."""

CHANNEL = "kinema_jobs"
OUTBOX = 10_000
"""Wake-ups waiting to be sent; beyond that they are dropped (polling covers them)."""
BATCH = 500
"""Most wake-ups sent in one statement."""
CONNECT_TIMEOUT_S = 5.0
KEEPALIVE_S = 15.0
"""An idle listening connection is probed this often: a dead one would deliver nothing and say
nothing."""
BACKOFF_S = (0.5, 10.0)
"""First and longest wait between two connection attempts."""


class Relay(Protocol):
    def publish(self, wake: Wake, job_id: str) -> None:
        """Send to the other replicas without waiting; never raises."""

    async def start(self, deliver: Deliver) -> None:
        """Start delivering the other replicas' wake-ups to ``deliver``."""

    async def close(self) -> None: ...


def open_relay(settings: Settings) -> Relay | None:
    """The relay the job store allows: PostgreSQL's notifications, or None (SQLite: one
    machine, one process — or ``jobs.relay = false``, e.g. behind a transaction pooler that
    does not carry ``LISTEN``)."""
    url = settings.database_url
    if not settings.jobs.relay or not url.startswith("postgresql"):
        return None
    return PostgresRelay(asyncpg_dsn(url))


def asyncpg_dsn(url: str) -> str:
    """``postgresql+asyncpg://…`` (SQLAlchemy) as the ``postgresql://…`` asyncpg connects to."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def keep_connected(
    dsn: str,
    what: str,
    session: Callable[[asyncpg.Connection, bool], Awaitable[None]],
    lost: Callable[[], None],
) -> None:
    """Run ``session`` on a connection of its own to ``dsn``, for ever (until cancelled):
    connected with backoff (:data:`BACKOFF_S`), and connected again whenever ``session`` ends
    with the connection lost, after ``lost`` is called. ``session``'s second argument says
    whether this is a reconnect. ``what`` names the user in the log lines."""
    import asyncpg

    wait, first = BACKOFF_S[0], True
    while True:
        try:
            conn = await asyncpg.connect(dsn, timeout=CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
            log.warning("%s: cannot reach PostgreSQL (%s); retrying in %.1f s", what, exc, wait)
            await asyncio.sleep(wait)
            wait = min(wait * 2, BACKOFF_S[1])
            continue
        wait = BACKOFF_S[0]
        try:
            await session(conn, not first)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("%s: lost the PostgreSQL connection (%s); reconnecting", what, exc)
        finally:
            lost()
            conn.terminate()
        first = False


class MemoryHub:
    """Replicas in one process (tests, benchmarks): what one publishes, the others receive."""

    def __init__(self) -> None:
        self.relays: list[MemoryRelay] = []

    def relay(self) -> MemoryRelay:
        relay = MemoryRelay(self)
        self.relays.append(relay)
        return relay


class MemoryRelay:
    def __init__(self, hub: MemoryHub) -> None:
        self._hub = hub
        self._deliver: Deliver | None = None

    def publish(self, wake: Wake, job_id: str) -> None:
        loop = asyncio.get_running_loop()
        for other in self._hub.relays:
            if other is not self and other._deliver is not None:
                loop.call_soon(other._deliver, wake, job_id)

    async def start(self, deliver: Deliver) -> None:
        self._deliver = deliver

    async def close(self) -> None:
        self._deliver = None


class PostgresRelay:
    def __init__(self, dsn: str, *, channel: str = CHANNEL) -> None:
        self._dsn = dsn
        self._channel = channel
        self._outbox: asyncio.Queue[str] = asyncio.Queue(maxsize=OUTBOX)
        self._deliver: Deliver | None = None
        self._task: asyncio.Task[None] | None = None
        self._pid: int | None = None
        """The server process of our connection: our own notifications come back from it."""
        self.connected = asyncio.Event()

    def publish(self, wake: Wake, job_id: str) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            self._outbox.put_nowait(f"{wake.value} {job_id}")

    async def start(self, deliver: Deliver) -> None:
        """Connect in the background; waits for the first connection up to
        :data:`CONNECT_TIMEOUT_S` (a database that is not there yet only delays wake-ups)."""
        self._deliver = deliver
        self._task = asyncio.create_task(self._forever(), name="kinema-relay")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                await self.connected.wait()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _forever(self) -> None:
        await keep_connected(self._dsn, "wake-ups", self._serve, self.connected.clear)

    async def _serve(self, conn: asyncpg.Connection, resync: bool) -> None:
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _conn: lost.set())
        self._pid = conn.get_server_pid()
        await conn.add_listener(self._channel, self._received)
        self.connected.set()
        if resync and self._deliver is not None:
            self._deliver(Wake.RESYNC, "")
        while not lost.is_set():
            batch = await self._next_batch(lost)
            if batch is None:
                await conn.execute("SELECT 1", timeout=CONNECT_TIMEOUT_S)
            elif batch:
                await conn.execute(
                    "SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p",
                    self._channel,
                    batch,
                    timeout=CONNECT_TIMEOUT_S,
                )
        raise OSError("the connection was closed")

    async def _next_batch(self, lost: asyncio.Event) -> list[str] | None:
        """The waiting wake-ups (at most :data:`BATCH`); None after :data:`KEEPALIVE_S` without
        any; empty when the connection is lost meanwhile."""
        batch = []
        if self._outbox.empty():
            get = asyncio.ensure_future(self._outbox.get())
            gone = asyncio.ensure_future(lost.wait())
            try:
                await asyncio.wait(
                    (get, gone), timeout=KEEPALIVE_S, return_when=asyncio.FIRST_COMPLETED
                )
            except BaseException:  # closed meanwhile
                get.cancel()
                raise
            finally:
                gone.cancel()
            if not get.done():
                get.cancel()
                return [] if lost.is_set() else None
            batch.append(get.result())
        while len(batch) < BATCH and not self._outbox.empty():
            batch.append(self._outbox.get_nowait())
        return batch

    def _received(self, _conn: Any, pid: int, _channel: str, payload: object) -> None:
        if pid == self._pid or self._deliver is None or not isinstance(payload, str):
            return
        kind, _, job_id = payload.partition(" ")
        try:
            wake = Wake(kind)
        except ValueError:
            log.debug("wake-ups: ignored %r", payload)
            return
        self._deliver(wake, job_id)
