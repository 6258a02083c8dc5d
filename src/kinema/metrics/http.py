"""HTTP metrics: an ASGI middleware that counts each answered request by method, route template
and status, and times it. Cheap on purpose (the v1 path is benchmarked): two clock reads, one
dict lookup and two in-memory updates a request, nothing that waits."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kinema.metrics.instruments import UNMATCHED, Metrics

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
"""Methods labelled as themselves; any other token a client sends is ``OTHER``."""


class HttpMetrics:
    """Counts and times every HTTP request this app answers (not websockets or lifespan)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # an exception before the answer started: the server answers 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            # The router left the matched route in the scope: its template, not the raw path,
            # keeps the label's values bounded.
            route = getattr(scope.get("route"), "path", None) or UNMATCHED
            method = scope["method"] if scope["method"] in METHODS else "OTHER"
            record = self.metrics.http(method, route, status)
            record(time.perf_counter() - start)
