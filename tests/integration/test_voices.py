"""kling-create-voice: samples are decoded and checked (format, 5-30 s), kept per key, and
voice_ids in a video request must name the caller's voices."""

from __future__ import annotations

import base64
import io
import wave
from pathlib import Path

import numpy as np
import pytest

from kinema.media.video import encode_mp4
from kinema.voices.reference import REFERENCE_RATE, decode_wav
from tests.conftest import Ctx, png
from tests.fixtures import media

pytestmark = pytest.mark.integration
VOICE = "/v1/kling-create-voice"
VIDEO = "/v1/kling-3-standard-image2video"


def wav(seconds: float, rate: int = 16000) -> str:
    return base64.b64encode(media.wav(seconds, rate)).decode()


async def test_create_voice_from_wav_and_mp4(ctx: Ctx, tmp_path: Path) -> None:
    key = await ctx.key()
    h = {"x-api-key": key}
    r = await ctx.client.post(
        VOICE, json={"voice_url": wav(6), "voice_name": "narrator"}, headers=h
    )
    assert r.status_code == 200, r.text
    assert r.json()["voice_id"].startswith("voice_")
    ids = [r.json()["voice_id"]]
    clip = tmp_path / "clip.mp4"
    frames = np.zeros((24 * 6, 64, 64, 3), dtype=np.uint8)
    audio = (np.sin(np.arange(16000 * 6) * 0.05) * 0.3).astype(np.float32)[None, :]
    encode_mp4(clip, frames, 24, audio, 16000)
    data_uri = "data:video/mp4;base64," + base64.b64encode(clip.read_bytes()).decode()
    r = await ctx.client.post(VOICE, json={"voice_url": data_uri}, headers=h)
    assert r.status_code == 200, r.text
    ids.append(r.json()["voice_id"])
    voices = ctx.svc.settings.storage_path / "voices"
    stored = [path for voice_id in ids for path in voices.glob(f"{voice_id}/sample.*")]
    assert sorted(p.suffix for p in stored) == [".mp4", ".wav"]
    for voice_id in ids:  # the tone lasts the whole sample: 6 s of it
        samples, _ = decode_wav((voices / voice_id / "reference.wav").read_bytes())
        assert len(samples) == pytest.approx(6 * REFERENCE_RATE, abs=REFERENCE_RATE * 0.05)


def stereo_wav(silence_s: float, tone_s: float, rate: int = 44100) -> str:
    """Stereo 16-bit: ``silence_s`` of silence, then a quiet tone for ``tone_s``."""
    tone = np.sin(np.arange(int(tone_s * rate)) * 0.05) * 1000
    left = np.concatenate([np.zeros(int(silence_s * rate)), tone])
    frames = np.stack([left, left * 0.5], axis=1).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(frames.tobytes())
    return base64.b64encode(buffer.getvalue()).decode()


async def test_a_cleaned_reference_clip_is_stored_beside_the_sample(ctx: Ctx) -> None:
    key = await ctx.key()
    r = await ctx.client.post(
        VOICE, json={"voice_url": stereo_wav(3.0, 20.0)}, headers={"x-api-key": key}
    )
    assert r.status_code == 200, r.text
    folder = ctx.svc.settings.storage_path / "voices" / r.json()["voice_id"]
    assert sorted(p.name for p in folder.iterdir()) == ["reference.wav", "sample.wav"]
    samples, rate = decode_wav((folder / "reference.wav").read_bytes())
    assert rate == REFERENCE_RATE and samples.ndim == 1
    assert len(samples) == 10 * REFERENCE_RATE  # the best 10 s of the 20 s tone
    head = samples[: REFERENCE_RATE // 50]  # the first 20 ms: the tone, not the silence
    rms_db = 20 * np.log10(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))
    assert np.sqrt(np.mean(head**2)) > 0.05 and -21 < rms_db < -19


async def test_a_silent_sample_is_400(ctx: Ctx) -> None:
    key = await ctx.key()
    silent = base64.b64encode(media.wav(6)[:44] + bytes(6 * 16000 * 2)).decode()
    r = await ctx.client.post(VOICE, json={"voice_url": silent}, headers={"x-api-key": key})
    assert r.status_code == 400
    assert r.json()["error"].startswith("voice_url: the sample holds less than 1 s of sound")


@pytest.mark.parametrize(
    ("voice_url", "needle"),
    [
        (wav(3), "5-30 s"),
        (wav(31), "5-30 s"),
        (base64.b64encode(b"plain text, not audio at all").decode(), "voice_url"),
        (base64.b64encode(png()).decode(), "voice_url"),
    ],
)
async def test_bad_samples_are_400(ctx: Ctx, voice_url: str, needle: str) -> None:
    key = await ctx.key()
    r = await ctx.client.post(VOICE, json={"voice_url": voice_url}, headers={"x-api-key": key})
    assert r.status_code == 400, r.text
    assert r.json()["error"].startswith("voice_url") and needle in r.json()["error"]


async def test_voice_name_rules_and_auth(ctx: Ctx) -> None:
    r = await ctx.client.post(VOICE, json={"voice_url": wav(6)})
    assert r.status_code == 401
    key = await ctx.key()
    r = await ctx.client.post(
        VOICE, json={"voice_url": wav(6), "voice_name": "x" * 21}, headers={"x-api-key": key}
    )
    assert r.status_code == 400 and "voice_name" in r.json()["error"]


async def test_voice_ids_must_belong_to_the_caller(ctx: Ctx) -> None:
    owner, other = await ctx.key(credits=5), await ctx.key(credits=5)
    voice_id = (
        await ctx.client.post(VOICE, json={"voice_url": wav(6)}, headers={"x-api-key": owner})
    ).json()["voice_id"]
    body = {
        "start_image_url": base64.b64encode(png()).decode(),
        "prompt": "<<<voice_1>>> says hello",
        "voice_ids": [voice_id],
    }
    r = await ctx.client.post(VIDEO, json=body, headers={"x-api-key": other})
    assert r.status_code == 400
    assert r.json()["error"].startswith("voice_ids[0]:") and "not found" in r.json()["error"]
    # The owner's voice exists, but no shipped engine speaks in it: a clear 400, no charge.
    r = await ctx.client.post(VIDEO, json=body, headers={"x-api-key": owner})
    assert r.status_code == 400 and "not supported" in r.json()["error"]
    r = await ctx.client.get("/v1/get-user-credits", headers={"x-api-key": owner})
    assert r.json() == {"credits": 5.0}


async def test_a_voice_without_its_reference_clip_is_a_400_at_submit(ctx: Ctx) -> None:
    key = await ctx.key(credits=5)
    h = {"x-api-key": key}
    voice_id = (await ctx.client.post(VOICE, json={"voice_url": wav(6)}, headers=h)).json()[
        "voice_id"
    ]
    # As a voice created before create-voice kept the cleaned clip.
    (ctx.svc.settings.storage_path / "voices" / voice_id / "reference.wav").unlink()
    body = {
        "start_image_url": base64.b64encode(png()).decode(),
        "prompt": '<<<voice_1>>> says "hello"',
        "voice_ids": [voice_id],
    }
    r = await ctx.client.post(VIDEO, json=body, headers=h)
    assert r.status_code == 400
    assert (
        r.json()["error"].startswith("voice_ids[0]:") and "no reference clip" in r.json()["error"]
    )
