"""Log lines as JSON (``server.log_format = "json"``): one object a line with ``time`` (UTC,
ISO 8601), ``level``, ``logger``, ``message`` and, on a line that belongs to a request,
``request_id``; an access line adds ``method``, ``path`` (query values redacted), ``status``,
``client`` and ``duration_ms``; a line with a traceback adds ``exception``.

A line belongs to a request when it is the request's access line (its ``x-request-id``
answer header, or the request id in its path) or is written by the task that runs the job
(:data:`REQUEST_ID`). Messages and tracebacks pass :func:`kinema.redact.redact_keys`: an API key
that found its way into one is never written."""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
from typing import Any

from kinema.redact import redact_keys

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "kinema_request_id", default=None
)
"""The request (job) id the current task works for; set by the task that runs a job."""

FIELDS = ("request_id", "method", "path", "status", "client", "duration_ms")
"""Attributes a record may carry (``extra=``) that a JSON line includes."""


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        time = dt.datetime.fromtimestamp(record.created, tz=dt.UTC)
        entry: dict[str, Any] = {
            "time": time.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact_keys(record.getMessage()),
        }
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if "request_id" not in entry and (current := REQUEST_ID.get()) is not None:
            entry["request_id"] = current
        if record.exc_info:
            entry["exception"] = redact_keys(self.formatException(record.exc_info))
        elif record.stack_info:
            entry["stack"] = redact_keys(self.formatStack(record.stack_info))
        return json.dumps(entry, ensure_ascii=False, default=str)
