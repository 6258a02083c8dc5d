"""Webhooks: a request's ``webhook`` URL gets one signed POST (Standard Webhooks) when the request
ends, retried until the receiver takes it or the retries run out; bad targets are 400s."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import standardwebhooks

from kinema.jobs import outbox
from kinema.jobs.webhooks import next_wait, retry_after_s
from tests.conftest import Ctx, app_context, make_settings, png, wait_status

pytestmark = pytest.mark.integration

IMAGE = "/v2/kling-3-image2image"
B64 = base64.b64encode(png()).decode()


class Receiver:
    """A webhook endpoint on 127.0.0.1: answers each POST with the next status of ``answers``
    (200 once they run out; a status may come with headers) and keeps what it got, and when."""

    def __init__(self) -> None:
        self.got: list[tuple[dict[str, str], bytes]] = []
        self.times: list[float] = []
        self.answers: list[int | tuple[int, dict[str, str]]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.got.append(({k.lower(): v for k, v in self.headers.items()}, body))
                receiver.times.append(time.monotonic())
                answer = receiver.answers.pop(0) if receiver.answers else 200
                status, extra = answer if isinstance(answer, tuple) else (answer, {})
                self.send_response(status)
                for name, value in extra.items():
                    self.send_header(name, value)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    async def wait_for(self, count: int, timeout: float = 10) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while len(self.got) < count:
            assert asyncio.get_running_loop().time() < deadline, f"got {len(self.got)} POSTs"
            await asyncio.sleep(0.02)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()
    r.server.server_close()


class Trickler:
    """A receiver on 127.0.0.1 that reads the request, then sends its answer one byte every
    ``every`` seconds (at most ``most`` bytes, then it hangs up): no single read ever waits long,
    so only a bound on the whole attempt stops it."""

    def __init__(self, every: float = 0.2, most: int = 150) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/slow"
        self.connected = threading.Event()
        self.stop = threading.Event()
        self.every, self.most = every, most
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:  # closed before anyone came
            return
        with conn:
            conn.recv(65536)
            self.connected.set()
            answer = b"HTTP/1.1 200 OK\r\n" + b"x-pad: " + b"a" * self.most
            for byte in answer[: self.most]:
                if self.stop.wait(self.every):
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:  # the sender hung up: what a total timeout does
                    return

    def close(self) -> None:
        self.stop.set()
        self.listener.close()
        self.thread.join(timeout=5)


@pytest.fixture
def trickler() -> Iterator[Trickler]:
    t = Trickler()
    yield t
    t.close()


def settings(tmp_path: Path, retry_s: list[float] | None = None, timeout_s: float = 5) -> Any:
    hooks = {"poll_interval_s": 0.05, "timeout_s": timeout_s}
    return make_settings(tmp_path, webhooks={**hooks, "retry_s": retry_s or [0.05, 0.05]})


def _verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return headers["webhook-signature"] == f"v1,{expected}"


async def _secret(c: Ctx, key: str) -> str:
    r = await c.client.get("/v2/webhooks/secret", headers={"x-api-key": key})
    assert r.status_code == 200
    return str(r.json()["secret"])


async def _state(c: Ctx, rid: str) -> dict[str, Any]:
    state = await c.svc.db.read(lambda conn: outbox.webhook_state(conn, rid))
    assert state is not None
    return state


async def test_a_completed_request_posts_its_result_signed(
    tmp_path: Path, static_runner: Any, receiver: Receiver
) -> None:
    async with app_context(settings(tmp_path), static_runner) as c:
        key = await c.key()
        h = {"x-api-key": key}
        body = {"image_url": B64, "prompt": "x", "webhook": receiver.url}
        rid = (await c.client.post(IMAGE, json=body, headers=h)).json()["request_id"]
        await receiver.wait_for(1)
        headers, raw = receiver.got[0]
        assert headers["content-type"] == "application/json"
        assert headers["webhook-id"] == f"msg_{rid}"
        secret = await _secret(c, key)
        assert _verify(secret, headers, raw)
        # The Standard Webhooks reference library accepts it as sent.
        assert standardwebhooks.Webhook(secret).verify(raw, headers)["data"]["request_id"] == rid
        other = await c.key()
        assert not _verify(await _secret(c, other), headers, raw)  # each key its own secret
        payload = json.loads(raw)
        assert payload["type"] == "request.completed"
        result = (await c.client.get(f"/v2/requests/{rid}", headers=h)).json()
        assert payload["data"]["status"] == "COMPLETED"
        assert payload["data"]["output"].split("?")[0] == result["output"].split("?")[0]
        assert (await c.client.get(payload["data"]["output"])).status_code == 200
        state = await _state(c, rid)
        assert state["delivered_at"] is not None and state["attempts"] == 1
        await asyncio.sleep(0.3)
        assert len(receiver.got) == 1  # delivered once


async def test_a_sync_request_with_a_webhook_posts_too(
    tmp_path: Path, static_runner: Any, receiver: Receiver
) -> None:
    async with app_context(settings(tmp_path), static_runner) as c:
        key = await c.key()
        body = {"image_url": B64, "prompt": "x", "webhook": receiver.url}
        r = await c.client.post("/v1/kling-3-image2image", json=body, headers={"x-api-key": key})
        assert r.status_code == 200
        await receiver.wait_for(1)
        assert json.loads(receiver.got[0][1])["data"]["request_id"] == r.headers["x-request-id"]


async def test_a_refused_delivery_is_retried_with_the_same_id(
    tmp_path: Path, static_runner: Any, receiver: Receiver
) -> None:
    receiver.answers = [500, 503]
    async with app_context(settings(tmp_path), static_runner) as c:
        key = await c.key()
        body = {"image_url": B64, "prompt": "x", "webhook": receiver.url}
        r = await c.client.post(IMAGE, json=body, headers={"x-api-key": key})
        rid = r.json()["request_id"]
        await receiver.wait_for(3)
        assert {headers["webhook-id"] for headers, _ in receiver.got} == {f"msg_{rid}"}
        await asyncio.sleep(0.2)
        state = await _state(c, rid)
        assert state["attempts"] == 3 and state["delivered_at"] is not None
        assert len(receiver.got) == 3


async def test_a_delivery_is_given_up_after_the_last_retry(
    tmp_path: Path, static_runner: Any, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.answers = [500] * 10
    async with app_context(settings(tmp_path, retry_s=[0.05]), static_runner) as c:
        key = await c.key()
        body = {"image_url": B64, "prompt": "x", "webhook": receiver.url + "?token=s3cret"}
        r = await c.client.post(IMAGE, json=body, headers={"x-api-key": key})
        rid = r.json()["request_id"]
        await receiver.wait_for(2)
        await asyncio.sleep(0.4)
        assert len(receiver.got) == 2  # the first attempt and one retry
        state = await _state(c, rid)
        assert state["delivered_at"] is None and state["last_error"] == "HTTP 500"
    assert "/hook?token=[redacted] failed (HTTP 500)" in caplog.text  # the query is never logged
    assert "s3cret" not in caplog.text


async def test_a_failed_request_posts_request_failed(
    tmp_path: Path, static_runner: Any, receiver: Receiver
) -> None:
    async with app_context(settings(tmp_path), static_runner) as c:
        key = await c.key(credits=1)
        h = {"x-api-key": key}
        assert c.svc.dispatcher is not None
        await c.svc.dispatcher.stop()  # the job stays queued until cancelled
        body = {"image_url": B64, "prompt": "x", "webhook": receiver.url}
        rid = (await c.client.post(IMAGE, json=body, headers=h)).json()["request_id"]
        await c.client.post(f"/v2/requests/{rid}/cancel", headers=h)
        await wait_status(c.client, key, rid, "FAILED")
        await receiver.wait_for(1)
        payload = json.loads(receiver.got[0][1])
        assert payload["type"] == "request.failed"
        assert payload["data"]["error"] == "cancelled by the client"
        assert payload["data"]["metrics"]["cost"] == 0


@pytest.mark.parametrize(
    ("webhook", "message"),
    [
        ("ftp://example.com/hook", "webhook: must be an http(s) URL"),
        ("example.com/hook", "webhook: must be an http(s) URL"),
        ("http:///hook", "webhook: must be an http(s) URL"),
        ("http://10.0.0.1/hook", "webhook: refused: 10.0.0.1 is a private address"),
        ("https://169.254.169.254/", "webhook: refused: 169.254.169.254 is a link-local address"),
    ],
)
async def test_bad_webhook_targets_are_400s_at_submit(ctx: Ctx, webhook: str, message: str) -> None:
    key = await ctx.key(credits=1)
    body = {"image_url": B64, "prompt": "x", "webhook": webhook}
    r = await ctx.client.post(IMAGE, json=body, headers={"x-api-key": key})
    assert r.status_code == 400 and r.json()["error"].startswith(message), r.json()
    credits = await ctx.client.get("/v1/get-user-credits", headers={"x-api-key": key})
    assert credits.json() == {"credits": 1.0}


async def test_a_trickling_receiver_is_cut_off_and_does_not_hold_up_others(
    tmp_path: Path, static_runner: Any, receiver: Receiver, trickler: Trickler
) -> None:
    # A byte every 0.2 s never trips a 1 s per-read timeout; only the attempt's total bound does.
    async with app_context(settings(tmp_path, retry_s=[60], timeout_s=1), static_runner) as c:
        key = await c.key()
        h = {"x-api-key": key}
        slow = {"image_url": B64, "prompt": "x", "webhook": trickler.url}
        slow_id = (await c.client.post(IMAGE, json=slow, headers=h)).json()["request_id"]
        assert await asyncio.to_thread(trickler.connected.wait, 10)
        started = time.monotonic()
        fast = {"image_url": B64, "prompt": "x", "webhook": receiver.url}
        fast_id = (await c.client.post(IMAGE, json=fast, headers=h)).json()["request_id"]
        await receiver.wait_for(1)  # delivered while the slow attempt is still going
        assert json.loads(receiver.got[0][1])["data"]["request_id"] == fast_id
        deadline = started + 15  # the trickle alone would last 30 s
        while (await _state(c, slow_id))["attempts"] == 0:
            assert time.monotonic() < deadline, "the slow attempt was never cut off"
            await asyncio.sleep(0.05)
        state = await _state(c, slow_id)
        assert state["delivered_at"] is None
        assert state["last_error"] == "no complete answer within 1 s (webhooks.timeout_s)"


async def test_a_429_with_retry_after_is_retried_no_sooner(
    tmp_path: Path, static_runner: Any, receiver: Receiver
) -> None:
    receiver.answers = [(429, {"Retry-After": "1"})]
    async with app_context(settings(tmp_path, retry_s=[0.05, 5]), static_runner) as c:
        key = await c.key()
        body = {"image_url": B64, "prompt": "x", "webhook": receiver.url}
        rid = (await c.client.post(IMAGE, json=body, headers={"x-api-key": key})).json()
        await receiver.wait_for(2, timeout=15)
        assert receiver.times[1] - receiver.times[0] >= 0.95  # not the schedule's 0.05 s
        for _ in range(100):  # the sender records the delivery just after the receiver has it
            state = await _state(c, rid["request_id"])
            if state["delivered_at"] is not None:
                break
            await asyncio.sleep(0.05)
        assert state["attempts"] == 2 and state["delivered_at"] is not None


def test_retry_after_stretches_the_schedule_up_to_its_longest_wait() -> None:
    schedule = [5.0, 30.0]
    assert next_wait(schedule, 0, None) == 5
    assert next_wait(schedule, 0, 1) == 5  # never sooner than the schedule
    assert next_wait(schedule, 0, 20) == 20
    assert next_wait(schedule, 0, 10_000) == 30  # capped by the schedule
    assert next_wait(schedule, 2, 20) is None  # it adds no attempts
    assert retry_after_s("120") == 120
    assert retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470) == 10
    assert retry_after_s("soon") is None and retry_after_s(None) is None
