"""The SDK against a mock transport: what is retried and how long it waits, that a retried submit
or v1 call keeps its Idempotency-Key (so it is never charged twice), that a v1 call whose answer
was lost is repeated only on a server that deduplicates v1, and that a wait that runs out
cancels the job."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import httpx
import pytest

from kinema.client import (
    AsyncClient,
    Client,
    ConnectionFailed,
    GenerationFailed,
    GenerationTimeout,
    Progress,
    RateLimited,
    RetryPolicy,
    ServerError,
)

pytestmark = pytest.mark.unit
BASE = "http://kinema.test"
SUBMITTED = {
    "request_id": "r1",
    "status": "QUEUED",
    "poll_url": f"{BASE}/v1/requests/r1",
    "status_url": f"{BASE}/v2/requests/r1/status",
    "response_url": f"{BASE}/v2/requests/r1",
}
Handler = Callable[[httpx.Request], httpx.Response]


class Recorder:
    """A mock server: answers each request with the next of ``answers`` (a response, or an
    exception to raise), keeps the requests, and records the client's sleeps."""

    def __init__(self, answers: list[httpx.Response | Exception]) -> None:
        self.answers: Iterator[httpx.Response | Exception] = iter(answers)
        self.requests: list[httpx.Request] = []
        self.sleeps: list[float] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = next(self.answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def client(self, retry: RetryPolicy | None = None) -> Client:
        client = Client(BASE, "kin_test", transport=httpx.MockTransport(self), retry=retry)
        client._sleep = self.sleeps.append
        return client


def ok(body: object) -> httpx.Response:
    return httpx.Response(200, json=body)


def err(status: int, **headers: str) -> httpx.Response:
    return httpx.Response(status, json={"error": f"status {status}"}, headers=headers)


def test_policy_backs_off_exponentially_with_jitter_and_honours_retry_after() -> None:
    policy = RetryPolicy(max_retries=4, backoff_s=0.5, max_backoff_s=3, jitter=0.1)
    delays = [policy.delay(n) for n in range(5)]
    for got, want in zip(delays[:4], [0.5, 1.0, 2.0, 3.0], strict=True):
        assert got is not None and want * 0.9 <= got <= want * 1.1
    assert delays[4] is None
    assert policy.delay(0, retry_after=12) == 12
    assert policy.delay(0, retry_after=61) is None  # longer than max_retry_after_s: give up


@pytest.mark.parametrize("status", [429, 502, 503, 504])
def test_a_v2_submit_is_retried_with_the_same_idempotency_key(status: int) -> None:
    server = Recorder([err(status, **{"retry-after": "2"}), err(status), ok(SUBMITTED)])
    job = server.client().submit("kling-3-image2image", {"prompt": "x"})
    assert job.request_id == "r1" and job.status_url == SUBMITTED["status_url"]
    keys = {r.headers["idempotency-key"] for r in server.requests}
    assert len(server.requests) == 3 and len(keys) == 1 and keys.pop().startswith("kin-sdk-")
    assert all(json.loads(r.content) == {"prompt": "x"} for r in server.requests)
    assert len(server.sleeps) == 2
    if status == 429:
        assert server.sleeps[0] == 2  # Retry-After, as given


def test_a_v2_submit_survives_broken_connections_and_each_submit_has_its_own_key() -> None:
    server = Recorder(
        [httpx.ReadError("reset"), ok(SUBMITTED), httpx.ConnectError("refused"), ok(SUBMITTED)]
    )
    client = server.client()
    client.submit("kling-3-image2image", {})
    client.submit("kling-3-image2image", {}, idempotency_key="mine")
    keys = [r.headers["idempotency-key"] for r in server.requests]
    assert keys[0] == keys[1] != keys[2] and keys[2:] == ["mine", "mine"]


def test_retries_end_with_the_typed_error() -> None:
    server = Recorder([err(503)] * 4)
    with pytest.raises(ServerError) as exc:
        server.client(retry=RetryPolicy(max_retries=3)).submit("m", {})
    assert exc.value.status == 503 and len(server.requests) == 4
    down = Recorder([httpx.ConnectError("refused")] * 2)
    with pytest.raises(ConnectionFailed):
        down.client(retry=RetryPolicy(max_retries=1)).credits()
    limited = Recorder([err(429, **{"retry-after": "3600"})])
    with pytest.raises(RateLimited) as rate:
        limited.client().submit("m", {})
    assert rate.value.retry_after == 3600 and limited.sleeps == []


PNG = b"\x89PNG"
DEDUPLICATES = {"status": "ok", "idempotency": ["v1", "v2"]}
# Lost after the request was sent, or a proxy that stopped waiting: the generation may be
# running (and will be charged); only a server that deduplicates v1 makes a repeat safe.
LOST: dict[str, Callable[[], httpx.Response | Exception]] = {
    "proxy-504": lambda: err(504),
    "proxy-502": lambda: err(502),
    "reset": lambda: httpx.ReadError("reset"),
    "read-timeout": lambda: httpx.ReadTimeout("slow"),
    "closed-mid-answer": lambda: httpx.RemoteProtocolError("closed mid-answer"),
}


def png() -> httpx.Response:
    return httpx.Response(200, content=PNG, headers={"content-type": "image/png"})


class V1Server(Recorder):
    """A :class:`Recorder` whose ``/healthz`` answers ``health`` (and counts the asks)."""

    def __init__(
        self, answers: list[httpx.Response | Exception], health: dict[str, object] | None
    ) -> None:
        super().__init__(answers)
        self.health = health  # None: no /healthz (404)
        self.probes = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/healthz":
            self.probes += 1
            return httpx.Response(404) if self.health is None else ok(self.health)
        return super().__call__(request)


def test_a_v1_call_that_proves_nothing_ran_is_retried_without_asking() -> None:
    kinema_502 = err(502, **{"x-request-id": "r9"})
    server = V1Server([err(429), err(503), kinema_502, httpx.ConnectError("refused"), png()],
                      health=None)  # fmt: skip
    assert server.client(retry=RetryPolicy(max_retries=4)).run_sync("m", {}) == PNG
    assert len(server.requests) == 5 and server.probes == 0


@pytest.mark.parametrize("lost", LOST)
def test_a_v1_call_whose_answer_was_lost_is_retried_on_a_deduplicating_server(lost: str) -> None:
    server = V1Server([LOST[lost](), png()], health=DEDUPLICATES)
    assert server.client().run_sync("m", {"prompt": "x"}) == PNG
    keys = {r.headers["idempotency-key"] for r in server.requests}
    assert len(server.requests) == 2 and len(keys) == 1  # the repeat attaches, charged once
    assert all(json.loads(r.content) == {"prompt": "x"} for r in server.requests)
    assert server.probes == 1


def test_the_server_is_asked_once_per_client_and_every_ambiguity_is_then_retried() -> None:
    server = V1Server([*(make() for make in LOST.values()), png(), png()], health=DEDUPLICATES)
    client = server.client(retry=RetryPolicy(max_retries=len(LOST)))
    assert client.run_sync("m", {}) == PNG
    assert client.run_sync("m", {}) == PNG
    assert server.probes == 1 and len(server.requests) == len(LOST) + 2
    first, second = server.requests[0], server.requests[-1]
    assert first.headers["idempotency-key"] != second.headers["idempotency-key"]  # per call


@pytest.mark.parametrize("lost", LOST)
@pytest.mark.parametrize("health", [None, {"status": "ok"}], ids=["no-healthz", "no-v1-dedup"])
def test_a_v1_call_whose_answer_was_lost_is_never_repeated_elsewhere(
    lost: str, health: dict[str, object] | None
) -> None:
    # The hosted API, or an older server: a repeat could run (and charge) the request twice.
    server = V1Server([LOST[lost](), png()], health=health)
    with pytest.raises((GenerationTimeout, ServerError, ConnectionFailed)):
        server.client().run_sync("m", {})
    assert len(server.requests) == 1 and server.probes == 1


def test_an_unanswered_question_means_no_repeat() -> None:
    class Down(V1Server):
        def __call__(self, request: httpx.Request) -> httpx.Response:
            if request.url.path == "/healthz":
                self.probes += 1
                raise httpx.ConnectError("refused")
            return super().__call__(request)

    server = Down([httpx.ReadError("reset"), png()], health=DEDUPLICATES)
    with pytest.raises(ConnectionFailed):
        server.client().run_sync("m", {})
    assert len(server.requests) == 1


def test_kinemas_own_504_is_raised_it_cancelled_and_refunded_the_job() -> None:
    server = V1Server([err(504, **{"x-request-id": "r9"}), png()], health=DEDUPLICATES)
    with pytest.raises(GenerationTimeout) as exc:
        server.client().run_sync("m", {})
    assert exc.value.request_id == "r9" and len(server.requests) == 1 and server.probes == 0


def test_an_answer_that_shows_deduplication_spares_the_question() -> None:
    replayed = httpx.Response(200, content=PNG, headers={"x-idempotent-replay": "false"})
    server = V1Server([replayed, httpx.ReadError("reset"), png()], health=None)
    client = server.client()
    assert client.run_sync("m", {}) == PNG
    assert client.run_sync("m", {}) == PNG  # retried: the first answer showed the server dedupes
    assert server.probes == 0 and len(server.requests) == 3


async def test_the_async_client_retries_v1_the_same_way() -> None:
    server = V1Server([httpx.ReadError("reset"), png()], health=DEDUPLICATES)
    elsewhere = V1Server([httpx.ReadError("reset"), png()], health=None)

    async def no_sleep(seconds: float) -> None:
        server.sleeps.append(seconds)

    for mock, want in ((server, 2), (elsewhere, 1)):

        async def handler(request: httpx.Request, mock: V1Server = mock) -> httpx.Response:
            return mock(request)

        async with AsyncClient(BASE, "kin_test", transport=httpx.MockTransport(handler)) as client:
            client._sleep = no_sleep
            if want == 2:
                assert await client.run_sync("m", {}) == PNG
            else:
                with pytest.raises(ConnectionFailed):
                    await client.run_sync("m", {})
        assert len(mock.requests) == want and mock.probes == 1
        keys = {r.headers["idempotency-key"] for r in mock.requests}
        assert len(keys) == 1


def _status(status: str, **extra: object) -> httpx.Response:
    code = 422 if status == "FAILED" else 200
    return httpx.Response(code, json={"request_id": "r1", "status": status, **extra})


def test_wait_reports_progress_and_returns_the_result() -> None:
    result = {"request_id": "r1", "status": "COMPLETED", "output": f"{BASE}/v1/files/o.png"}
    server = Recorder(
        [
            ok(SUBMITTED),
            _status("QUEUED", queue_position=2),
            _status("QUEUED", queue_position=2),
            _status("PROCESSING", progress=0.5, phase="denoise"),
            _status("COMPLETED"),
            ok(result),
            httpx.Response(200, content=b"img", headers={"content-length": "3"}),
        ]
    )
    seen: list[Progress] = []
    got = server.client().run("m", {}, on_progress=seen.append)
    assert [(p.status, p.progress, p.queue_position, p.phase) for p in seen] == [
        ("QUEUED", None, 2, None),
        ("PROCESSING", 0.5, None, "denoise"),
        ("COMPLETED", None, None, None),
    ]
    assert got.output is not None and got.output.url == result["output"]
    assert got.read() == b"img" and got.read() == b"img"  # downloaded once
    assert "x-api-key" in server.requests[-1].headers  # same origin


def test_a_download_elsewhere_does_not_get_the_key() -> None:
    result = {"request_id": "r1", "status": "COMPLETED", "output": "https://s3.example/o?sig=1"}
    server = Recorder([ok(result), httpx.Response(200, content=b"img")])
    assert server.client().job("r1").result().read() == b"img"
    assert "x-api-key" not in server.requests[-1].headers
    assert server.requests[0].url == f"{BASE}/v2/requests/r1"


def test_a_failed_job_raises_generation_failed() -> None:
    server = Recorder([_status("FAILED", error="engine exploded")])
    job = server.client().job("r1")
    with pytest.raises(GenerationFailed, match="engine exploded") as exc:
        job.wait()
    assert exc.value.request_id == "r1"


def test_a_wait_that_runs_out_cancels_the_job() -> None:
    server = Recorder([_status("PROCESSING", progress=0.1), _status("FAILED", error="cancelled")])
    with pytest.raises(GenerationTimeout, match="cancelled"):
        server.client().job("r1").wait(timeout=0)
    assert server.requests[-1].method == "POST"
    assert server.requests[-1].url.path == "/v2/requests/r1/cancel"


def test_a_job_that_completes_as_the_wait_runs_out_is_answered() -> None:
    result = {"request_id": "r1", "status": "COMPLETED", "output": f"{BASE}/v1/files/o.png"}
    server = Recorder([_status("PROCESSING"), _status("COMPLETED"), ok(result)])
    assert server.client().job("r1").wait(timeout=0).status == "COMPLETED"


async def test_the_async_client_does_the_same() -> None:
    server = Recorder(
        [err(503), ok(SUBMITTED), _status("PROCESSING", progress=0.2), _status("FAILED")]
    )

    async def handler(request: httpx.Request) -> httpx.Response:
        return server(request)

    async def no_sleep(seconds: float) -> None:
        server.sleeps.append(seconds)

    async with AsyncClient(BASE, "kin_test", transport=httpx.MockTransport(handler)) as client:
        client._sleep = no_sleep
        job = await client.submit("m", {})
        assert (
            server.requests[0].headers["idempotency-key"]
            == (server.requests[1].headers["idempotency-key"])
        )
        with pytest.raises(GenerationTimeout):
            await job.wait(timeout=0)
    assert server.requests[-1].url.path == "/v2/requests/r1/cancel"


def test_config_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KINEMA_URL", "http://10.1.2.3:9000/")
    monkeypatch.setenv("KINEMA_KEY", "kin_env")
    client = Client()
    assert client.config.base_url == "http://10.1.2.3:9000"
    assert client.config.headers()["x-api-key"] == "kin_env"
    assert Client("http://other:1", "kin_arg").config.api_key == "kin_arg"
    client.close()
