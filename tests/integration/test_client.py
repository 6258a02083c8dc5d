"""The SDK and the CLI against a real server (``kinema serve`` on 127.0.0.1): the static image
engine and the test suite's slow video engine (20 progress steps; ``steps=N`` runs until
cancelled), so nothing here needs torch. Every charge is checked on the balance."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from PIL import Image

from kinema.cli import main
from kinema.client import (
    AsyncClient,
    Client,
    Element,
    GenerationFailed,
    GenerationTimeout,
    InvalidRequest,
    Progress,
    Unauthorized,
    image_to_image,
    image_to_video,
)
from kinema.media.video import probe_mp4
from tests.fixtures.served import ROOT, Server

# One served process per module, on its own SQLite database.
pytestmark = [pytest.mark.integration, pytest.mark.embedded_only, pytest.mark.timeout(180)]
SAMPLE = ROOT / "examples" / "sample.png"
IMAGE_PRICE = 0.035
VIDEO_PRICE = 3 * 0.126  # 3 s with audio


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("client"), "custom")
    server.env.update(
        KINEMA_ENGINES__VIDEO_PRESET="test-slow-video",
        KINEMA_ENGINES__IMAGE_PRESET="static-image",
        KINEMA_ENGINES__PLUGINS='["tests.fixtures.engines"]',
        KINEMA_JOBS__POLL_INTERVAL_S="0.05",
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def client(server: Server) -> Iterator[Client]:
    key = server.cli("keys", "create", "--credits", "10")
    with Client(server.url, key, poll_interval=0.05) as client:
        yield client


def _running(client: Client) -> str:
    """Submit a job that runs until cancelled; its id once PROCESSING."""
    job = client.submit(image_to_video(SAMPLE, "steps=100000", duration=3))
    for _ in range(400):
        if job.status().status == "PROCESSING":
            return job.request_id
        client._sleep(0.05)
    raise AssertionError("the job never started")


def _ended(client: Client, request_id: str) -> Progress:
    for _ in range(400):
        status = client.job(request_id).status()
        if status.final:
            return status
        client._sleep(0.05)
    raise AssertionError(f"{request_id} did not end")


def test_run_sync_answers_the_image_bytes_and_charges_once(client: Client) -> None:
    data = client.run_sync(image_to_image(SAMPLE, "watercolor", aspect_ratio="1:1"))
    assert data.startswith(b"\x89PNG")
    assert client.credits() == pytest.approx(10 - IMAGE_PRICE)
    # The hosted SDK's shape: a slug and a dict, as it is sent.
    raw = client.run_sync("kling-3-image2image", {"image_url": _data_uri(), "prompt": "x"})
    assert raw.startswith(b"\x89PNG")
    assert client.credits() == pytest.approx(10 - 2 * IMAGE_PRICE)


def _data_uri() -> str:
    from kinema.client.media import to_data_uri

    return to_data_uri(SAMPLE.read_bytes())


def test_run_reports_progress_and_saves_the_video(client: Client, tmp_path: Path) -> None:
    seen: list[Progress] = []
    result = client.run(image_to_video(SAMPLE, "waves", duration=3), on_progress=seen.append)
    assert result.status == "COMPLETED" and result.metrics["cost"] == pytest.approx(VIDEO_PRICE)
    states = [p.status for p in seen]
    assert states[-1] == "COMPLETED" and "PROCESSING" in states
    assert any(p.progress is not None and 0 < p.progress < 1 for p in seen)
    info = probe_mp4(result.save(tmp_path / "out.mp4"))
    assert (info["width"], info["height"], info["frames"]) == (1920, 1080, 72)
    assert client.credits() == pytest.approx(10 - VIDEO_PRICE)


def test_submit_events_reattach_and_result(server: Server, client: Client, tmp_path: Path) -> None:
    job = client.submit(image_to_image(Image.open(SAMPLE), "oil", output_format="jpeg"))
    events = list(job.events())
    assert [e.name for e in events][-1] == "result" and events[0].name == "status"
    assert events[-1].data["output"]
    with Client(server.url, client.config.api_key) as other:  # another process, say
        again = other.job(job.request_id)
        result = again.wait()
        assert again.status().status == "COMPLETED"
    path = result.save(tmp_path / "out.jpg")
    with Image.open(path) as img:
        assert img.format == "JPEG" and img.size == (1024, 576)
    assert result.read() == path.read_bytes()
    with pytest.raises(Unauthorized), Client(server.url, "kin_nope") as stranger:
        stranger.job(job.request_id).status()


def test_cancel_refunds_and_a_timeout_cancels(client: Client) -> None:
    job = client.job(_running(client))
    job.cancel()
    with pytest.raises(GenerationFailed) as failed:
        job.wait(timeout=60)
    assert failed.value.request_id == job.request_id
    with pytest.raises(GenerationTimeout) as timed_out:
        client.run(image_to_video(SAMPLE, "steps=100000", duration=3), timeout=0.5)
    assert timed_out.value.request_id is not None
    assert _ended(client, timed_out.value.request_id).status == "FAILED"  # stopped at a step
    assert client.credits() == pytest.approx(10)  # both refunded


def test_local_checks_and_server_checks_are_the_same_errors(client: Client) -> None:
    with pytest.raises(InvalidRequest) as local:
        image_to_video(SAMPLE, "x", duration=20)
    body = {"start_image_url": _data_uri(), "duration": 20, "prompt": "x"}
    with pytest.raises(InvalidRequest) as remote:
        client.submit("kling-3-standard-image2video", body)
    assert remote.value.status == 400 and remote.value.message == local.value.message
    with pytest.raises(InvalidRequest, match="references @Element2"):
        image_to_image(SAMPLE, "@Element2", elements=[Element(SAMPLE)])
    assert client.credits() == pytest.approx(10)


class LosingTransport(httpx.HTTPTransport):
    """Forwards every request, but loses the answer to the first submit (as a dropped
    connection would): the server did the work, the client never heard."""

    def __init__(self) -> None:
        super().__init__()
        self.lost = 0
        self.submits: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        if request.method == "POST" and request.url.path.startswith(("/v1/kling", "/v2/kling")):
            self.submits.append(request.headers["idempotency-key"])
            if self.lost == 0:
                self.lost += 1
                response.read()
                response.close()
                raise httpx.ReadError("connection reset", request=request)
        return response


def test_retries_never_charge_twice(server: Server) -> None:
    key = server.cli("keys", "create", "--credits", "1")
    transport = LosingTransport()
    with Client(server.url, key, transport=transport) as client:
        client._sleep = lambda s: None
        result = client.run(image_to_image(SAMPLE, "x"))
        assert result.status == "COMPLETED"
        assert len(transport.submits) == 2 and len(set(transport.submits)) == 1
        assert client.credits() == pytest.approx(1 - IMAGE_PRICE)
        # v1 too: Kinema deduplicates it (as /healthz says), so the lost answer is asked for
        # again with the same key and the repeat answers the same generation, charged once.
        transport.lost = 0
        assert client.run_sync(image_to_image(SAMPLE, "x")).startswith(b"\x89PNG")
        assert len(transport.submits) == 4 and transport.submits[2] == transport.submits[3]
        assert client.credits() == pytest.approx(1 - 2 * IMAGE_PRICE)


async def test_the_async_client_end_to_end(client: Client, tmp_path: Path) -> None:
    async with AsyncClient(client.config.base_url, client.config.api_key) as aclient:
        job = await aclient.submit(image_to_image(SAMPLE, "x", aspect_ratio="9:16"))
        names = [event.name async for event in job.events()]
        assert names[-1] == "result"
        result = await job.wait()
        with Image.open(await result.save(tmp_path / "a.png")) as img:
            assert img.size == (576, 1024)
        assert await aclient.credits() == pytest.approx(10 - IMAGE_PRICE)


def _kinema(server: Server, key: str, *args: str) -> str:
    result = CliRunner().invoke(main, [*args, "--url", server.url, "--key", key])
    assert result.exit_code == 0, result.output
    return result.stdout


def test_cli_i2i_and_i2v_end_to_end(server: Server, tmp_path: Path) -> None:
    key = server.cli("keys", "create", "--credits", "5")
    out = tmp_path / "cli.webp"
    printed = _kinema(
        server, key, "i2i", str(SAMPLE), "-p", "@Element1 in ink", "--element",
        f"{SAMPLE},{SAMPLE}", "--format", "webp", "-o", str(out),
    )  # fmt: skip
    assert printed.strip() == str(out)
    with Image.open(out) as img:
        assert img.format == "WEBP" and img.size == (1024, 576)
    video = tmp_path / "cli.mp4"
    _kinema(
        server, key, "i2v", str(SAMPLE), "-p", "it sails", "--end-image", str(SAMPLE),
        "--duration", "4", "--no-audio", "--aspect-ratio", "9:16", "--cfg-scale", "0.6",
        "--negative-prompt", "rain", "--seed", "3", "-o", str(video),
    )  # fmt: skip
    info = probe_mp4(video)
    assert (info["width"], info["height"], info["frames"], info["has_audio"]) == (
        1080, 1920, 96, False,
    )  # fmt: skip
    shots = tmp_path / "shots.mp4"
    _kinema(
        server, key, "i2v", str(SAMPLE), "--shot", "1:a boat", "--shot", "2:the sun",
        "--duration", "3", "-q", "-o", str(shots),
    )  # fmt: skip
    assert probe_mp4(shots)["frames"] == 72


def test_cli_async_status_result_cancel(server: Server, tmp_path: Path) -> None:
    key = server.cli("keys", "create", "--credits", "5")
    request_id = _kinema(server, key, "i2i", str(SAMPLE), "-p", "x", "--async").strip()
    out = tmp_path / "later.png"
    assert _kinema(
        server, key, "result", request_id, "--wait", "-q", "-o", str(out)
    ).strip() == str(out)
    assert json.loads(_kinema(server, key, "status", request_id))["status"] == "COMPLETED"
    assert json.loads(_kinema(server, key, "result", request_id))["output"]
    long = _kinema(server, key, "i2v", str(SAMPLE), "-p", "steps=100000", "--async").strip()
    assert json.loads(_kinema(server, key, "cancel", long))["request_id"] == long
    failed = CliRunner().invoke(main, ["result", long, "--wait", "--url", server.url, "--key", key])
    assert failed.exit_code == 1 and "generation failed" in failed.output
    bad = CliRunner().invoke(
        main, ["i2v", str(SAMPLE), "-p", "x", "--duration", "4", "--shot", "9:a", "--key", key]
    )
    assert bad.exit_code == 2 and "multi_prompt" in bad.output
    assert CliRunner().invoke(main, ["--version"]).output.startswith("kinema ")


def test_the_hosted_sdk_works_unchanged(server: Server) -> None:
    """The hosted API's own SDK (``segmind`` on PyPI), only its base URL and key changed."""
    segmind = pytest.importorskip(
        "segmind", reason="the hosted SDK is not installed (pip install segmind) - not checked"
    )
    key = server.cli("keys", "create", "--credits", "1")
    client = segmind.SegmindClient(api_key=key, base_url=server.url + "/v1")
    try:
        image = _data_uri()
        response = client.run_sync("kling-3-image2image", image_url=image, prompt="x")
        assert response.content.startswith(b"\x89PNG")
        assert response.headers["x-remaining-credits"] == f"{1 - IMAGE_PRICE:g}"
        job = client.submit_async("kling-3-image2image", image_url=image, prompt="x")
        body = job.wait(timeout=60, interval=0.1)
        assert body["status"] == "COMPLETED" and body["output"]
        assert httpx.get(body["output"]).content.startswith(b"\x89PNG")
        long = client.submit_async(
            "kling-3-standard-image2video", start_image_url=image, prompt="steps=100000"
        )
        with Client(server.url, key) as ours:
            ours.job(long.request_id).cancel()
        with pytest.raises(segmind.v2.InferenceFailed):  # a FAILED request, as the hosted API's
            long.wait(timeout=60, interval=0.1)
    finally:
        client._client.close()  # it has no close() of its own


def test_cli_creates_a_voice(server: Server, tmp_path: Path) -> None:
    import wave

    sample = tmp_path / "voice.wav"
    with wave.open(str(sample), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\x00\x01" * 16000 * 6)
    key = server.cli("keys", "create", "--credits", "1")
    voice_id = _kinema(server, key, "voice", str(sample), "--name", "narrator").strip()
    assert voice_id.startswith("voice_")
    short = tmp_path / "short.wav"
    with wave.open(str(short), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\x00\x01" * 16000)
    refused = CliRunner().invoke(main, ["voice", str(short), "--url", server.url, "--key", key])
    assert refused.exit_code == 1 and "voice_url" in refused.output
