"""The access log, written once the answer has gone out.

uvicorn writes its access line when the response starts, before the first byte reaches the
client: on the client's time (0.1-0.2 ms a request on this project's VM). ``kinema serve`` runs
uvicorn without it and wraps the app in :class:`AccessLog`, which writes the same line, through
uvicorn's access handler and format, on the ``kinema.access`` logger (:func:`log_config`), after
the last byte has been handed to the transport. The query's values are never written
(:mod:`kinema.redact`): a signed download link's query is the link's credential. With
``server.log_format = "json"`` every line is a JSON object (:mod:`kinema.logs`); an access line
then carries the request id, its parts and its duration as fields."""

from __future__ import annotations

import asyncio
import copy
import logging
import time
import urllib.parse
from typing import Any, Literal

from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.config import LOGGING_CONFIG

from kinema.redact import redact_values

ACCESS = logging.getLogger("kinema.access")


def log_config(log_format: Literal["text", "json"] = "text") -> dict[str, Any]:
    """uvicorn's logging configuration, plus Kinema's loggers: ``kinema`` (the service's own
    messages, uvicorn's default format) and ``kinema.access`` (uvicorn's access format);
    ``json``: every line of both, and of uvicorn's own, as one JSON object."""
    config = copy.deepcopy(LOGGING_CONFIG)
    if log_format == "json":
        for name in ("default", "access"):
            config["formatters"][name] = {"()": "kinema.logs.JsonFormatter"}
    config["loggers"]["kinema"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    config["loggers"]["kinema.access"] = {
        "handlers": ["access"],
        "level": "INFO",
        "propagate": False,
    }
    # httpx logs every request's full URL at INFO (a webhook's query included): warnings only.
    config["loggers"]["httpx"] = {"level": "WARNING"}
    return config


class AccessLog:
    """ASGI middleware: one access line per HTTP request that got a complete answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not ACCESS.isEnabledFor(logging.INFO):
            await self.app(scope, receive, send)
            return
        status = 0
        request_id: str | None = None
        start = time.perf_counter()

        async def send_then_log(message: Message) -> None:
            nonlocal status, request_id
            if message["type"] == "http.response.start":
                status = message["status"]
                request_id = _request_id(message)
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                # After this task's step: the answer is on its way before the line is written.
                took = time.perf_counter() - start
                asyncio.get_running_loop().call_soon(_log, scope, status, request_id, took)

        await self.app(scope, receive, send_then_log)


def _request_id(start: Message) -> str | None:
    """The ``x-request-id`` a generation answer carries (its job's id)."""
    for name, value in start.get("headers", ()):
        if name.lower() == b"x-request-id":
            return bytes(value).decode("latin-1")
    return None


def _log(scope: Scope, status: int, request_id: str | None, took_s: float) -> None:
    # uvicorn's arguments, in its order: its AccessFormatter reads them from the record.
    client = scope.get("client")
    address = f"{client[0]}:{client[1]}" if client else ""
    path = urllib.parse.quote(scope["path"])
    if scope.get("query_string"):
        # Never the values: the query of a download link is its signature (a bearer token).
        path += "?" + redact_values(scope["query_string"].decode("ascii", "replace"))
    if request_id is None:  # a request about one job (status, result, cancel, events)
        request_id = scope.get("path_params", {}).get("request_id")
    fields = {
        "request_id": request_id,
        "method": scope["method"],
        "path": path,
        "status": status,
        "client": address,
        "duration_ms": round(took_s * 1000, 3),
    }
    ACCESS.info(
        '%s - "%s %s HTTP/%s" %d',
        address,
        scope["method"],
        path,
        scope["http_version"],
        status,
        extra=fields,
    )
