"""JSON log lines (server.log_format = "json"): one object a line, the request id on a job's
lines, never an API key."""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import sys

import pytest

from kinema.api.access import log_config
from kinema.billing.keys import generate_key
from kinema.logs import REQUEST_ID, JsonFormatter
from kinema.redact import redact_keys

pytestmark = pytest.mark.unit


def record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("kinema.jobs", logging.WARNING, __file__, 1, message, args, None)
    rec.__dict__.update(extra)
    return rec


def test_a_line_is_one_object_with_time_level_logger_and_message() -> None:
    line = JsonFormatter().format(record("job %s: %s", "abc", "lost"))
    assert "\n" not in line
    entry = json.loads(line)
    assert entry.keys() == {"time", "level", "logger", "message"}
    assert entry["level"] == "WARNING" and entry["logger"] == "kinema.jobs"
    assert entry["message"] == "job abc: lost"
    assert entry["time"].endswith("Z") and "T" in entry["time"]


async def test_a_line_written_by_a_jobs_task_carries_its_request_id() -> None:
    async def job_task() -> str:
        REQUEST_ID.set("job-1")
        return JsonFormatter().format(record("settling"))

    line = await asyncio.create_task(job_task())
    assert json.loads(line)["request_id"] == "job-1"
    # The task's context is its own: this one has no request id.
    assert "request_id" not in json.loads(JsonFormatter().format(record("elsewhere")))


def test_fields_given_with_the_record_win_over_the_context() -> None:
    token = REQUEST_ID.set("from-context")
    try:
        line = JsonFormatter().format(record("x", request_id="given", status=200))
    finally:
        REQUEST_ID.reset(token)
    entry = json.loads(line)
    assert entry["request_id"] == "given" and entry["status"] == 200


def test_a_key_in_a_message_or_a_traceback_is_redacted() -> None:
    key = generate_key()
    try:
        raise ValueError(f"bad key {key}")
    except ValueError:
        rec = record("refused %s", key)
        rec.exc_info = sys.exc_info()
    line = JsonFormatter().format(rec)
    assert key not in line and key[4:] not in line
    entry = json.loads(line)
    assert entry["message"] == "refused kin_[redacted]"
    assert "ValueError: bad key kin_[redacted]" in entry["exception"]
    assert redact_keys("no key here") == "no key here"


def test_json_log_config_formats_uvicorns_and_kinemas_lines_as_json() -> None:
    config = log_config("json")
    for name in ("default", "access"):
        assert config["formatters"][name] == {"()": "kinema.logs.JsonFormatter"}
    assert log_config()["formatters"]["default"].get("()") != "kinema.logs.JsonFormatter"
    # What dictConfig will build from it (not applied here: that would replace the test run's
    # own handlers).
    module, _, name = config["formatters"]["default"]["()"].rpartition(".")
    assert getattr(importlib.import_module(module), name) is JsonFormatter
