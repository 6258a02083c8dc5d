"""Audio-driven LTX-2 on the tiny presets: a speech track is encoded into audio latents and held
frozen (clean, timestep 0) on every transformer call of both stages; it drives the video (other
audio, other frames; the same audio and seed, the same frames) and is the output's audio."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import torch

from kinema.engines.base import SpeechTrack, VideoOutput
from kinema.engines.ltx2 import LTX2Engine
from kinema.engines.ltx2_audio import encode_audio
from tests.engines.conftest import ignore
from tests.engines.conftest import video_job as job

pytestmark = pytest.mark.engines
RATE = 24_000
FRAMES = 9  # 0.375 s at 24 fps: 9 audio latent frames


def tone(hz: float, seconds: float = FRAMES / 24, rate: int = RATE) -> SpeechTrack:
    t = np.arange(round(seconds * rate)) / rate
    return SpeechTrack((0.4 * np.sin(2 * np.pi * hz * t)).astype(np.float32), rate)


def noise(seed: int, seconds: float = FRAMES / 24) -> SpeechTrack:
    samples = np.random.default_rng(seed).uniform(-0.5, 0.5, round(seconds * RATE))
    return SpeechTrack(samples.astype(np.float32), RATE)


@contextmanager
def audio_inputs(engine: LTX2Engine) -> Iterator[list[dict[str, torch.Tensor]]]:
    """The audio arguments of every transformer call, as the transformer received them."""
    seen: list[dict[str, torch.Tensor]] = []

    def hook(_module: object, _args: object, kwargs: dict[str, Any], _out: object) -> None:
        names = ("audio_hidden_states", "audio_timestep", "audio_sigma")
        seen.append({name: kwargs[name].detach().clone() for name in names})

    transformer = engine.pipeline.transformer
    handle = transformer.register_forward_hook(hook, with_kwargs=True)
    try:
        yield seen
    finally:
        handle.remove()


def render(engine: LTX2Engine, speech: SpeechTrack, seed: int = 7) -> VideoOutput:
    return engine.generate(job(num_frames=FRAMES, seed=seed, speech=speech), ignore)


def frames(out: VideoOutput) -> npt.NDArray[np.uint8]:
    return out.frames.array()


def test_the_tiny_audio_vae_compresses_like_the_real_one(ltx2_engine: LTX2Engine) -> None:
    vae = ltx2_engine.pipeline.audio_vae
    assert (vae.temporal_compression_ratio, vae.mel_compression_ratio) == (4, 4)
    assert tuple(vae.config.ch_mult) == (1, 1, 1)
    latents = encode_audio(vae, tone(220).samples, RATE, FRAMES / 24)
    assert latents.frames == 9  # 0.375 s at 25 latent frames a second


@pytest.mark.parametrize("engine", ["ltx2_engine", "ltx2_two_stage_engine"])
def test_every_pass_of_every_stage_sees_the_clean_track_at_timestep_0(
    engine: str, request: pytest.FixtureRequest
) -> None:
    ltx2: LTX2Engine = request.getfixturevalue(engine)
    speech = tone(220)
    clean = encode_audio(ltx2.pipeline.audio_vae, speech.samples, RATE, FRAMES / 24).packed

    with audio_inputs(ltx2) as seen:
        out = render(ltx2, speech)

    assert len(seen) == ltx2.total_steps == out.info["transformer_passes"]
    assert out.info["frozen_audio_passes"] == ltx2.total_steps
    assert out.info["audio_driven"] is True
    for call in seen:
        assert torch.equal(call["audio_hidden_states"], clean)
        assert not call["audio_timestep"].any() and not call["audio_sigma"].any()


@pytest.mark.parametrize("engine", ["ltx2_engine", "ltx2_two_stage_engine"])
def test_the_track_drives_the_video(engine: str, request: pytest.FixtureRequest) -> None:
    ltx2: LTX2Engine = request.getfixturevalue(engine)
    a, b = render(ltx2, tone(220)), render(ltx2, tone(220))
    other = render(ltx2, noise(1))

    assert np.array_equal(frames(a), frames(b))
    assert not np.array_equal(frames(a), frames(other))


def test_the_output_audio_is_the_track_itself(ltx2_engine: LTX2Engine) -> None:
    speech = noise(2)
    out = render(ltx2_engine, speech)

    assert out.sample_rate == RATE
    assert out.audio is not None and out.audio.shape == (1, len(speech.samples))
    assert np.array_equal(out.audio[0], speech.samples)


def test_without_a_track_the_audio_is_the_models_own(ltx2_engine: LTX2Engine) -> None:
    with audio_inputs(ltx2_engine) as seen:
        out = ltx2_engine.generate(job(num_frames=FRAMES), ignore)

    assert out.sample_rate == 16000 and "audio_driven" not in out.info
    assert seen[0]["audio_timestep"].all()  # noisy audio, denoised with the video


def test_a_track_needs_generate_audio(ltx2_engine: LTX2Engine) -> None:
    with pytest.raises(ValueError, match="generate_audio"):
        ltx2_engine.generate(job(num_frames=FRAMES, speech=tone(220), generate_audio=False), ignore)
