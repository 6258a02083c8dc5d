"""The access line of a real request, formatted as JSON (server.log_format = "json"): it
carries the request id the answer gave, and no key — not from the header, not from the query."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Iterator

import httpx
import pytest

from kinema.api.access import ACCESS, AccessLog
from kinema.logs import JsonFormatter
from tests.conftest import Ctx, png

pytestmark = pytest.mark.integration

B64 = base64.b64encode(png()).decode()


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.setFormatter(JsonFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def access_lines() -> Iterator[list[str]]:
    handler = Lines()
    level = ACCESS.level
    ACCESS.addHandler(handler)
    ACCESS.setLevel(logging.INFO)
    yield handler.lines
    ACCESS.removeHandler(handler)
    ACCESS.setLevel(level)


async def test_a_json_access_line_carries_the_request_id_and_no_key(
    ctx: Ctx, access_lines: list[str]
) -> None:
    key = await ctx.key(credits=1)
    record = await ctx.svc.keys.authenticate(key)
    transport = httpx.ASGITransport(app=AccessLog(ctx.app), client=("10.1.2.3", 4567))
    async with httpx.AsyncClient(transport=transport, base_url="http://kinema.test") as client:
        r = await client.post(
            f"/v1/kling-3-image2image?api_key={key}",
            json={"image_url": B64, "prompt": "x"},
            headers={"x-api-key": key, "authorization": f"Bearer {key}"},
        )
        assert r.status_code == 200, r.text
        request_id = r.headers["x-request-id"]
        status = await client.get(f"/v2/requests/{request_id}/status", headers={"x-api-key": key})
        assert status.status_code == 200
    await asyncio.sleep(0)  # the line is written after the answer's last byte
    assert len(access_lines) == 2, access_lines
    for line in access_lines:
        assert key not in line and key[4:] not in line and record.id not in line
    first, second = (json.loads(line) for line in access_lines)
    assert first["request_id"] == request_id
    assert first["logger"] == "kinema.access" and first["level"] == "INFO"
    assert first["method"] == "POST" and first["status"] == 200
    assert first["path"] == "/v1/kling-3-image2image?api_key=[redacted]"
    assert first["client"] == "10.1.2.3:4567" and first["duration_ms"] > 0
    assert first["message"] == (
        '10.1.2.3:4567 - "POST /v1/kling-3-image2image?api_key=[redacted] HTTP/1.1" 200'
    )
    # A request about a job names it from its path.
    assert second["request_id"] == request_id and second["method"] == "GET"
