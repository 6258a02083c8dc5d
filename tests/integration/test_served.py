"""The real thing, end to end: `kinema` CLI creates a key, `kinema serve --preset tiny` runs the
server (uvicorn, worker process, tiny LTX-2 / FLUX.2 klein), the examples run against it, and an
async request survives the server being killed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from kinema.media.video import probe_mp4
from tests.fixtures.served import ROOT, Server, serving

# One served process per module, on its own SQLite database.
pytestmark = [
    pytest.mark.integration,
    pytest.mark.engines,
    pytest.mark.embedded_only,
    pytest.mark.timeout(300),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving(tmp_path_factory.mktemp("served"), "tiny", credits=50) as server:
        yield server


def _run_example(server: Server, name: str, *args: str) -> dict[str, object]:
    env = {**os.environ, "KINEMA_URL": server.url, "KINEMA_KEY": server.key}
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name), *args],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_hosted_snippet_gets_a_contract_video(server: Server, tmp_path: Path) -> None:
    out = tmp_path / "video.mp4"
    result = _run_example(server, "hosted_snippet.py", "--out", str(out), "--duration", "5")
    info = probe_mp4(out)
    assert (info["width"], info["height"]) == (1920, 1080)
    assert info["frames"] == 120 and info["fps"] == pytest.approx(24)
    assert info["duration"] == pytest.approx(5.0, abs=0.05)
    assert info["has_audio"] and info["audio_codec"] == "aac"
    assert info["audio_duration"] == pytest.approx(5.0, abs=0.05)
    meta = result["metadata"]
    assert isinstance(meta, dict) and meta["transformer_passes"] == meta["steps"]


def test_async_example_gets_a_png(server: Server, tmp_path: Path) -> None:
    from PIL import Image

    out = tmp_path / "image.png"
    _run_example(server, "async_image.py", "--out", str(out))
    with Image.open(out) as img:
        assert img.format == "PNG" and img.size == (1024, 1024)


def test_each_answer_gets_an_access_line(server: Server) -> None:
    r = httpx.get(f"{server.url}/v1/get-user-credits?probe=1", headers={"x-api-key": server.key})
    assert r.status_code == 200
    line = '"GET /v1/get-user-credits?probe=[redacted] HTTP/1.1" 200 OK'  # names, no values
    for _ in range(200):  # written just after the answer (bounded: 20 s on a loaded machine)
        if line in server.log.read_text():
            assert "probe=1" not in server.log.read_text()
            return
        time.sleep(0.1)
    raise AssertionError(f"no access line in {server.log.read_text()[-2000:]}")


def test_cli_shows_the_spent_balance(server: Server) -> None:
    balance = float(server.cli("credits", "show", server.key))
    assert balance == pytest.approx(50 - 5 * 0.126 - 0.035)


def test_async_request_survives_a_killed_server(server: Server) -> None:
    h = {"x-api-key": server.key}
    body = {
        "start_image_url": "data:image/png;base64," + _png_b64(),
        "prompt": "waves",
        "duration": "3",
        "generate_audio": False,
    }
    sub = httpx.post(
        server.url + "/v2/kling-3-standard-image2video", json=body, headers=h, timeout=30
    ).json()
    server.kill()
    server.start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status = httpx.get(sub["status_url"], headers=h, timeout=10).json()
        if status["status"] in ("COMPLETED", "FAILED"):
            break
        time.sleep(0.3)
    assert status["status"] == "COMPLETED", status
    result = httpx.get(sub["response_url"], headers=h, timeout=10).json()
    assert httpx.get(result["output"], timeout=30).status_code == 200


def _png_b64() -> str:
    import base64
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (320, 180), (10, 120, 60)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_voice_ids_are_spoken_by_the_served_worker(server: Server, tmp_path: Path) -> None:
    """Two voices made through create-voice, then a sync video whose prompt gives each a line:
    the video worker loaded the tiny speech engine beside the tiny LTX-2 at start-up."""
    import base64

    from tests.fixtures import media

    h = {"x-api-key": server.key}
    voices = []
    for rate in (16000, 22050):  # two samples, two different clips
        sample = base64.b64encode(media.wav(6, rate)).decode()
        r = httpx.post(
            server.url + "/v1/kling-create-voice", json={"voice_url": sample}, headers=h, timeout=60
        )
        assert r.status_code == 200, r.text
        voices.append(r.json()["voice_id"])
    body = {
        "start_image_url": "data:image/png;base64," + _png_b64(),
        "prompt": '<<<voice_1>>> asks "Ready?" and <<<voice_2>>> says "Let us go."',
        "duration": "3",
        "voice_ids": voices,
    }
    r = httpx.post(
        server.url + "/v1/kling-3-standard-image2video", json=body, headers=h, timeout=240
    )
    assert r.status_code == 200, r.text
    meta = json.loads(r.headers["x-output-metadata"])
    assert meta["voice_ids_honoured"] is True and meta["audio_driven"] is True
    assert [line["speaker"] for line in meta["voice_lines"]] == [1, 2]
    out = tmp_path / "voiced.mp4"
    out.write_bytes(r.content)
    info = probe_mp4(out)
    assert info["has_audio"] and info["audio_duration"] == pytest.approx(3.0, abs=0.05)


def test_cli_generates_a_video_through_the_sdk(server: Server, tmp_path: Path) -> None:
    """``kinema i2v`` as a user types it (key and URL from the environment, a local file)
    against the tiny engines: a real 3 s contract video. Last here: it spends credits."""
    out = tmp_path / "cli.mp4"
    env = {**server.env, "KINEMA_URL": server.url, "KINEMA_KEY": server.key}
    image = str(ROOT / "examples" / "sample.png")
    args = ["i2v", image, "--prompt", "waves", "--duration", "3", "--no-audio", "-o", str(out)]
    done = subprocess.run(
        [sys.executable, "-m", "kinema", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(out) and "saved" in done.stderr
    info = probe_mp4(out)
    assert (info["width"], info["height"], info["frames"]) == (1920, 1080, 72)
    assert not info["has_audio"]
