"""The SDK's request builders and inputs: the server's submit-time checks run locally, with the
server's messages; files, bytes, open files and PIL images travel as data URIs; errors map to
their statuses; the SDK imports without torch, diffusers or the server."""

from __future__ import annotations

import base64
import io
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from PIL import Image

from kinema.client import (
    IMAGE_TO_IMAGE,
    IMAGE_TO_VIDEO,
    VOICE,
    Element,
    GenerationFailed,
    InsufficientCredits,
    InvalidRequest,
    NotFound,
    RateLimited,
    ServerError,
    Shot,
    Unauthorized,
    create_voice,
    image_to_image,
    image_to_video,
)
from kinema.client._core import SSEDecoder, error_of
from kinema.client.media import to_url
from tests.conftest import png

pytestmark = pytest.mark.unit
URL = "https://example.com/start.png"


def test_the_sdk_imports_without_torch_diffusers_or_the_server() -> None:
    code = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'diffusers', 'transformers', 'accelerate', 'fastapi',
                                  'starlette', 'sqlalchemy', 'numpy', 'av'):
            raise ImportError('blocked for the SDK: ' + name)
        return None
sys.meta_path.insert(0, Block())
import kinema.client
import kinema.client.webhooks
kinema.client.image_to_image('https://example.com/a.png', 'x')
print(kinema.client.Client(base_url='http://127.0.0.1:1', api_key='k').config.base_url)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "http://127.0.0.1:1"


def test_a_video_request_sends_only_what_was_given() -> None:
    request = image_to_video(URL, "waves", duration=3, generate_audio=False, seed=7)
    assert request.model == IMAGE_TO_VIDEO
    assert request.params == {
        "prompt": "waves",
        "start_image_url": URL,
        "duration": 3,
        "generate_audio": False,
        "seed": 7,
    }


def test_a_video_request_takes_every_contract_option() -> None:
    request = image_to_video(
        URL,
        "@Element1 walks in",
        aspect_ratio="9:16",
        duration=6,
        cfg_scale=0.7,
        elements=[Element(URL, [URL, URL])],
        multi_prompt=[Shot("@Element1 waves", 2), Shot("it walks", "4")],
        negative_prompt="blur",
        shot_type="customize",
        webhook="https://hooks.example.com/x",
    )
    p = request.params
    assert p["elements"] == [{"frontal_image_url": URL, "reference_image_urls": [URL, URL]}]
    assert p["multi_prompt"] == [
        {"prompt": "@Element1 waves", "duration": 2},
        {"prompt": "it walks", "duration": "4"},
    ]
    assert (p["aspect_ratio"], p["cfg_scale"], p["negative_prompt"]) == ("9:16", 0.7, "blur")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"duration": 16}, 'duration: must be one of "3".."15" (got 16)'),
        ({"prompt": "@Element2 runs"}, "prompt: references @Element2 but elements has 0"),
        ({"end_image": URL, "multi_prompt": [Shot("a", 5)]}, "end_image_url"),
        ({"multi_prompt": [Shot("a", 2)]}, "multi_prompt"),
        ({"voice_ids": ["v"], "generate_audio": False}, "voice_ids: requires generate_audio"),
        ({"prompt": None}, "prompt: required unless multi_prompt is given"),
        ({"cfg_scale": 2}, "cfg_scale: must be at most 1 (got 2)"),
        ({"aspect_ratio": "4:3"}, "aspect_ratio: must be one of"),
    ],
)
def test_a_video_request_breaking_a_submit_rule_fails_locally(
    kwargs: dict[str, object], message: str
) -> None:
    args: dict[str, object] = {"prompt": "waves", **kwargs}
    with pytest.raises(InvalidRequest) as err:
        image_to_video(URL, **args)  # type: ignore[arg-type]
    assert message in err.value.message
    assert err.value.status == 400


def test_an_image_request_and_its_checks() -> None:
    request = image_to_image(URL, "watercolor", aspect_ratio="3:2", resolution="2K")
    assert request.model == IMAGE_TO_IMAGE
    assert request.params == {
        "image_url": URL,
        "prompt": "watercolor",
        "aspect_ratio": "3:2",
        "resolution": "2K",
    }
    with pytest.raises(InvalidRequest, match="output_format: must be one of"):
        image_to_image(URL, "x", output_format="gif")
    with pytest.raises(InvalidRequest, match="prompt: must not be empty"):
        image_to_image(URL, "  ")


def test_a_voice_request() -> None:
    request = create_voice(b"RIFF\x00\x00\x00\x00WAVEfmt ", "narrator")
    assert request.model == VOICE
    assert str(request.params["voice_url"]).startswith("data:audio/wav;base64,")
    with pytest.raises(InvalidRequest, match="voice_name: must be at most 20 characters"):
        create_voice(URL, "x" * 21)


def test_local_images_travel_as_data_uris(tmp_path: Path) -> None:
    data = png(32, 16)
    path = tmp_path / "in.png"
    path.write_bytes(data)
    expected = "data:image/png;base64," + base64.b64encode(data).decode()
    assert to_url(path, "f") == expected
    assert to_url(str(path), "f") == expected
    assert to_url(data, "f") == expected
    assert to_url(io.BytesIO(data), "f") == expected
    pil = to_url(Image.new("RGB", (8, 8)), "f")
    decoded = base64.b64decode(pil.split(",", 1)[1])
    with Image.open(io.BytesIO(decoded)) as img:
        assert img.size == (8, 8)
    jpeg = io.BytesIO()
    Image.new("RGB", (8, 8)).save(jpeg, format="JPEG")
    assert to_url(jpeg.getvalue(), "f").startswith("data:image/jpeg;base64,")
    assert to_url("data:image/png;base64,AAAA", "f") == "data:image/png;base64,AAAA"
    bare = base64.b64encode(data).decode()
    assert to_url(bare, "f") == bare  # bare base64 passes as the API takes it


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="start_image_url: no such file"):
        image_to_video("cat.png", "waves")
    with pytest.raises(InvalidRequest, match="image_url: no such file"):
        image_to_image(tmp_path / "nope.png", "x")
    with pytest.raises(InvalidRequest, match="expected a URL"):
        to_url(3.5, "f")


def _answer(status: int, body: object = None, **headers: str) -> httpx.Response:
    if body is None:
        return httpx.Response(status, text="<html>bad gateway</html>", headers=headers)
    return httpx.Response(status, json=body, headers=headers)


@pytest.mark.parametrize(
    ("status", "message", "kind"),
    [
        (400, "duration: bad", InvalidRequest),
        (401, "invalid API key", Unauthorized),
        (404, "Request x not found", NotFound),
        (410, "retired", NotFound),
        (406, "not enough credits: this request costs 1", InsufficientCredits),
        (406, "the body must be application/json", InvalidRequest),
        (422, "engine exploded", GenerationFailed),
        (500, "internal error", ServerError),
        (502, "no worker", ServerError),
    ],
)
def test_each_error_answer_is_its_typed_error(status: int, message: str, kind: type) -> None:
    error = error_of(_answer(status, {"error": message}, **{"x-request-id": "r1"}))
    assert type(error) is kind
    assert (error.status, error.message, error.request_id) == (status, message, "r1")


def test_a_429_carries_retry_after_and_a_non_json_answer_is_described() -> None:
    error = error_of(_answer(429, {"error": "slow down"}, **{"retry-after": "7"}))
    assert isinstance(error, RateLimited) and error.retry_after == 7
    proxy = error_of(_answer(502))
    assert isinstance(proxy, ServerError) and "HTTP 502" in proxy.message


def test_server_sent_events_decode() -> None:
    decoder = SSEDecoder()
    lines = [
        ": keep-alive",
        "",
        "event: status",
        'data: {"status": "QUEUED"}',
        "",
        "event: result",
        'data: {"status":',
        'data:  "COMPLETED"}',
        "",
    ]
    events = [e for line in lines if (e := decoder.feed(line)) is not None]
    assert [(e.name, dict(e.data)) for e in events] == [
        ("status", {"status": "QUEUED"}),
        ("result", {"status": "COMPLETED"}),
    ]
