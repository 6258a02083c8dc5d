"""Access, against a real ``kinema serve`` with ``server.public_url`` set: another key's request
ids are 404 on every route that takes one and its files cannot be downloaded; every URL in an
answer, an event and a webhook body is built from the public URL; and a run that uses keys (in
headers and a query), signed download links, webhook secrets and a receiver's token leaves
none of them in the server's log (stdout and stderr, workers included)."""

from __future__ import annotations

import base64
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import standardwebhooks

from tests.conftest import png
from tests.fixtures.served import Server, serving

pytestmark = [pytest.mark.integration, pytest.mark.embedded_only, pytest.mark.timeout(120)]

PUBLIC = "https://kinema.example.test:8443"
IMAGE = "/v2/kling-3-image2image"
TOKEN = "receiver-token-5d1c"
"""The receiver's own credential in its webhook URL's query."""


class Receiver:
    """Webhook endpoints on 127.0.0.1: ``/hook`` takes a POST, ``/down`` answers 500."""

    def __init__(self) -> None:
        self.got: list[tuple[str, dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                headers = {k.lower(): v for k, v in self.headers.items()}
                receiver.got.append((self.path, headers, body))
                self.send_response(500 if self.path.startswith("/down") else 200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()
    r.server.server_close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("access")
    with serving(data, "static", credits=10, env=_ENV) as server:
        yield server


_ENV = {
    "KINEMA_SERVER__PUBLIC_URL": PUBLIC,
    "KINEMA_FETCH__ALLOW_HOSTS": '["127.0.0.1"]',
    "KINEMA_WEBHOOKS__RETRY_S": "[0.1]",
}


def local(url: str, server: Server) -> str:
    """A public URL as this test reaches it (the proxy in front that public_url names)."""
    assert url.startswith(PUBLIC + "/"), url
    return server.url + url.removeprefix(PUBLIC)


def _submit(server: Server, key: str, webhook: str) -> dict[str, Any]:
    body = {"image_url": base64.b64encode(png()).decode(), "prompt": "x", "webhook": webhook}
    r = httpx.post(
        server.url + IMAGE, json=body, headers={"authorization": f"Bearer {key}"}, timeout=30
    )
    assert r.status_code == 200, r.text
    answer: dict[str, Any] = r.json()
    return answer


def _completed(server: Server, key: str, status_url: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        r = httpx.get(local(status_url, server), headers={"x-api-key": key}, timeout=10)
        status: dict[str, Any] = r.json()
        if status["status"] in ("COMPLETED", "FAILED"):
            assert status["status"] == "COMPLETED", status
            return status
        time.sleep(0.1)
    raise AssertionError(f"not completed: {status}")


def _wait(condition: Any, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_ids_files_urls_and_logs(server: Server, receiver: Receiver) -> None:
    owner, other = server.key, server.cli("keys", "create", "--name", "other", "--credits", "1")
    secret = httpx.get(server.url + "/v2/webhooks/secret", headers={"x-api-key": owner}).json()
    secret = secret["secret"]
    sub = _submit(server, owner, f"{receiver.url}/hook?token={TOKEN}")
    rid = sub["request_id"]
    for name in ("poll_url", "status_url", "response_url"):
        assert sub[name].startswith(f"{PUBLIC}/"), sub

    # Another key: every route that takes the id is a 404, and the cancel changes nothing.
    theirs = {"x-api-key": other}
    for method, path in [
        ("GET", f"/v2/requests/{rid}/status"),
        ("GET", f"/v2/requests/{rid}"),
        ("GET", f"/v1/requests/{rid}"),
        ("GET", f"/v2/requests/{rid}/events"),
        ("POST", f"/v2/requests/{rid}/cancel"),
    ]:
        r = httpx.request(method, server.url + path, headers=theirs, timeout=10)
        assert (r.status_code, r.json()) == (404, {"error": f"Request {rid} not found"}), path
    status = _completed(server, owner, sub["status_url"])
    assert status["response_url"] == f"{PUBLIC}/v2/requests/{rid}"

    result = httpx.get(local(sub["response_url"], server), headers={"x-api-key": owner}).json()
    output = result["output"]
    assert output.startswith(f"{PUBLIC}/v1/files/outputs/{rid}/"), output
    assert httpx.get(local(output, server)).status_code == 200

    # Its file: a link is the only way in, and a forged one answers as for a file that does
    # not exist (no oracle for which ids exist).
    path, _, query = local(output, server).partition("?")
    forged = re.sub(r"signature=[^&]+", "signature=" + "0" * 64, query)
    nowhere = path.replace(rid, "00000000-0000-0000-0000-000000000000")
    answers = [httpx.get(f"{url}?{forged}", headers=theirs) for url in (path, nowhere)] + [
        httpx.get(path, headers=theirs)
    ]
    assert [r.status_code for r in answers] == [403, 403, 400], [r.text for r in answers]
    assert (
        answers[0].json()
        == answers[1].json()
        == {"error": "this download link is invalid or has expired"}
    )

    # The events stream's result and the webhook's body carry the public URLs too.
    events = httpx.get(
        local(status["response_url"], server) + "/events", headers={"x-api-key": owner}
    )
    assert f"{PUBLIC}/v1/files/outputs/{rid}/" in events.text and server.url not in events.text
    _wait(lambda: any(p.startswith("/hook") for p, _, _ in receiver.got), "no webhook POST")
    hook = next((h, b) for p, h, b in receiver.got if p.startswith("/hook"))
    data = standardwebhooks.Webhook(secret).verify(hook[1], hook[0])["data"]
    assert data["request_id"] == rid and data["output"].startswith(f"{PUBLIC}/v1/files/")

    # A receiver that fails: its warning is logged (with its query redacted) once given up.
    down = _submit(server, owner, f"{receiver.url}/down?token={TOKEN}")
    _completed(server, owner, down["status_url"])
    _wait(
        lambda: f"webhook of {down['request_id']} to" in server.errors.read_text(),
        f"no webhook warning: {server.errors.read_text()[-2000:]}",
    )
    # A key in a query, and a wrong key that looks like one.
    r = httpx.get(f"{server.url}/v1/get-user-credits?api_key={owner}", headers={"x-api-key": owner})
    assert r.status_code == 200
    assert (
        httpx.get(server.url + "/v2/requests/x", headers={"x-api-key": owner + "x"}).status_code
        == 401
    )

    # Every credential the run used, and none of them in the log.
    signatures = [h["webhook-signature"] for _, h, _ in receiver.got]
    link_values = re.findall(r"(?:signature|expires)=([^&\"]+)", output)
    credentials = {
        "owner key": owner,
        "other key": other,
        "webhook secret": secret.removeprefix("whsec_"),
        "receiver token": TOKEN,
        **{f"download link {i}": value for i, value in enumerate(link_values)},
        **{f"webhook signature {i}": s.removeprefix("v1,") for i, s in enumerate(signatures)},
    }
    assert len(signatures) >= 2 and len(link_values) == 2  # the hook and the down one
    time.sleep(0.5)  # the last access lines are written just after their answers
    log = server.log.read_text(errors="replace") + server.errors.read_text(errors="replace")
    assert f"GET /v1/files/outputs/{rid}/" in log  # the download was logged, redacted
    leaked = [name for name, value in credentials.items() if value in log]
    assert not leaked, (leaked, log[-3000:])
    assert "/down?token=[redacted] failed (HTTP 500)" in log
