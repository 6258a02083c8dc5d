"""The access log of ``kinema serve``: uvicorn's line, written after the answer has gone out."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from uvicorn.logging import AccessFormatter

from kinema.api.access import ACCESS, AccessLog, log_config
from kinema.redact import redact_query

SCOPE: dict[str, Any] = {
    "type": "http",
    "method": "POST",
    "path": "/v1/a b",
    "query_string": b"x=1",
    "http_version": "1.1",
    "client": ("127.0.0.1", 5000),
}


class Recorder(logging.Handler):
    def __init__(self, events: list[Any]) -> None:
        super().__init__()
        self.events = events
        self.setFormatter(AccessFormatter('%(client_addr)s - "%(request_line)s" %(status_code)s'))

    def emit(self, record: logging.LogRecord) -> None:
        self.events.append(("log", self.format(record)))


@pytest.fixture
def events() -> Iterator[list[Any]]:
    found: list[Any] = []
    handler = Recorder(found)
    ACCESS.addHandler(handler)
    level = ACCESS.level
    ACCESS.setLevel(logging.INFO)
    yield found
    ACCESS.removeHandler(handler)
    ACCESS.setLevel(level)


async def _receive() -> dict[str, Any]:
    return {"type": "http.disconnect"}


async def _serve(app: Any, events: list[Any]) -> None:
    async def send(message: dict[str, Any]) -> None:
        events.append(message["type"])

    await AccessLog(app)(dict(SCOPE), _receive, send)
    await asyncio.sleep(0)  # the line is written after the answer's last send


async def test_the_line_is_uvicorns_and_follows_the_last_byte(events: list[Any]) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": b"a", "more_body": True})
        await send({"type": "http.response.body", "body": b"b"})
        events.append("app returned")

    await _serve(app, events)
    assert events == [
        "http.response.start",
        "http.response.body",
        "http.response.body",
        "app returned",
        ("log", '127.0.0.1:5000 - "POST /v1/a%20b?x=[redacted] HTTP/1.1" 201 Created'),
    ]


async def test_no_line_without_an_answer(events: list[Any]) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await _serve(app, events)
    await asyncio.sleep(0)
    assert events == []


async def test_other_scopes_pass_through_untouched(events: list[Any]) -> None:
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append((scope["type"], send))

    async def send(message: dict[str, Any]) -> None:
        pass

    await AccessLog(app)({"type": "lifespan"}, _receive, send)
    assert seen == [("lifespan", send)]
    assert events == []


def test_log_config_routes_kinema_loggers_through_uvicorns_handlers() -> None:
    config = log_config()
    assert config["loggers"]["kinema.access"]["handlers"] == ["access"]
    assert config["loggers"]["kinema"]["handlers"] == ["default"]
    assert "kinema" not in log_config.__globals__["LOGGING_CONFIG"]["loggers"]  # a copy


def test_urls_are_logged_without_their_query_values() -> None:
    link = "http://h:8000/v1/files/outputs/j/output.png?expires=17&sig=abc#frag"
    assert redact_query(link) == (
        "http://h:8000/v1/files/outputs/j/output.png?expires=[redacted]&sig=[redacted]"
    )
    assert redact_query("https://h/hook") == "https://h/hook"
