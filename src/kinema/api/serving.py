"""How ``kinema serve`` runs uvicorn: its limits for slow and oversized clients.

uvicorn bounds an idle kept-alive connection (``timeout_keep_alive``) and, with h11 only, the
size of a request head; with httptools (what ``uvicorn[standard]`` runs) it bounds neither the
head's size nor the time a client may take to send it: a client that opens a connection and
sends half a request line holds it forever (1,000 such connections stayed open ≥ 25 s), and a
200 KB header was read whole. :class:`GuardedProtocol` adds both bounds to uvicorn's httptools
protocol: the head (request line and headers) must arrive within :data:`HEAD_TIMEOUT_S` of the
connection opening or of the request's first byte (else ``408`` and the connection is closed),
and be at most :data:`MAX_HEAD_BYTES` (else ``431``). The body has its own bound
(``server.max_body_mb``), and a request being answered is never timed by this guard.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import socket
from collections.abc import Callable
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEAD_BYTES = 32 * 1024
"""Largest request line plus headers. The contract's requests need well under 2 KB; 32 KB leaves
room for cookies and proxy headers (nginx's default buffers take 8 KB per line)."""
HEAD_TIMEOUT_S = 10.0
"""Longest a client may take to send a request's head."""
LINGER_S = 2.0
"""How long a refused connection's further bytes are read and dropped before it is closed."""
KEEP_ALIVE_S = 5
"""How long an idle kept-alive connection stays open (uvicorn's ``timeout_keep_alive``)."""


class HeadTooLarge(Exception):
    """Raised from a parser callback to stop reading a head over the limit."""


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a size and a time limit on each request head."""

    max_head_bytes = MAX_HEAD_BYTES
    head_timeout_s = HEAD_TIMEOUT_S

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_bytes = 0
        """Parsed bytes of the current head (line and headers)."""
        self._head_raw = 0
        """Bytes received since the head began: the parser holds a header's value whole until
        it ends, so this bounds what it can hold to one read past the limit."""
        self._in_head = True
        self._head_too_large = False
        self._discarding = False
        self._head_timer: asyncio.TimerHandle | None = None
        self._start_head_clock()

    def data_received(self, data: bytes) -> None:
        if self._discarding:
            return
        if self._in_head:
            if self._head_raw > self.max_head_bytes:
                self._refuse(431, "Request Header Fields Too Large", "request head too large")
                return
            self._head_raw += len(data)
        super().data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_clock()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        self._head_bytes = 0
        self._in_head = True
        self._start_head_clock()
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)  # ": " and CRLF
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_raw = 0
        self._stop_head_clock()
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        # The parser stops on HeadTooLarge as on any callback error; uvicorn answers those 400.
        if self._head_too_large:
            self._refuse(431, "Request Header Fields Too Large", "request head too large")
        else:
            super().send_400_response(msg)

    def _count(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > self.max_head_bytes:
            self._head_too_large = True
            raise HeadTooLarge

    def _start_head_clock(self) -> None:
        self._stop_head_clock()
        self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def _stop_head_clock(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            message = f"request head not received within {self.head_timeout_s:g} s"
            self._refuse(408, "Request Timeout", message)

    def _refuse(self, status: int, reason: str, message: str) -> None:
        body = json.dumps({"error": message}).encode()
        head = (
            f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        )
        self.transport.write(head.encode() + body)
        # A lingering close: what the client is still sending is read and dropped for a moment,
        # so that closing does not reset the connection before the answer is read.
        self._discarding = True
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_S, self.transport.close)


def uvicorn_options() -> dict[str, Any]:
    """The keyword arguments ``kinema serve`` gives ``uvicorn.run`` for its limits."""
    return {
        "http": GuardedProtocol,
        "timeout_keep_alive": KEEP_ALIVE_S,
        "h11_max_incomplete_event_size": MAX_HEAD_BYTES,  # the same bound should h11 be chosen
    }


class ListenError(Exception):
    """The server's address cannot be listened on (in use, not this machine's, no permission)."""


def listen_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port``, as uvicorn would bind it, made before the app starts
    so that a port in use is reported at once instead of after the engines have loaded."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ListenError(
                f"port {port} on {host} is already in use (another kinema serve?); "
                "stop that process or choose another port with --port"
            ) from None
        raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    # Never inheritable: uvloop's subprocesses keep every inheritable descriptor, so the engine
    # workers would hold the port after the server is killed and a restart could not bind it.
    sock.set_inheritable(False)
    return sock


class Server(uvicorn.Server):
    """uvicorn's server on a socket bound beforehand (:func:`listen_socket`), saying where it
    listens once the app has started (uvicorn says so only for sockets it binds itself), and
    calling ``on_shutdown`` when it stops (uvicorn re-raises a SIGTERM once it has shut down,
    so code after :meth:`run` does not run then)."""

    def __init__(
        self, config: uvicorn.Config, on_shutdown: Callable[[], None] = lambda: None
    ) -> None:
        super().__init__(config)
        self._on_shutdown = on_shutdown

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().shutdown(sockets)
        finally:
            self._on_shutdown()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and sockets:
            host, port = sockets[0].getsockname()[:2]
            shown = f"[{host}]" if ":" in host else host
            logging.getLogger("uvicorn.error").info(
                "Uvicorn running on http://%s:%d (Press CTRL+C to quit)", shown, port
            )
