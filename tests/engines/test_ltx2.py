"""LTX-2 engine on tiny random weights: real pipeline, real shapes, counts and code paths."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import torch
from diffusers.models.transformers.transformer_ltx2 import LTX2VideoTransformer3DModel
from diffusers.pipelines.ltx2.pipeline_ltx2_condition import LTX2ConditionPipeline
from PIL import Image

from kinema.engines.base import Element, EngineCancelled, ImageToVideoEngine, VideoJob
from kinema.engines.diffusion import resolve_device, resolve_dtype
from kinema.engines.ltx2 import LTX2Engine
from kinema.engines.registry import LoadOptions, load_engine
from tests.engines.conftest import BLUE, Watch, ignore
from tests.engines.conftest import video_job as job

pytestmark = pytest.mark.engines


def test_loads_the_real_pipeline_through_from_pretrained(ltx2_engine: LTX2Engine) -> None:
    assert isinstance(ltx2_engine, ImageToVideoEngine)
    assert isinstance(ltx2_engine.pipeline, LTX2ConditionPipeline)
    assert isinstance(ltx2_engine.pipeline.transformer, LTX2VideoTransformer3DModel)
    assert ltx2_engine.pipeline.vae_temporal_compression_ratio == 8
    assert ltx2_engine.pipeline.vae_spatial_compression_ratio == 32


def test_renders_the_grid_frame_count_with_audio(ltx2_engine: LTX2Engine) -> None:
    out = ltx2_engine.generate(job(), ignore)

    assert out.frames.array().shape == (
        121,
        32,
        64,
        3,
    )  # 8k+1 ≥ 120; 16:9 capped at 64 on a 32 grid
    assert out.frames.array().dtype == np.uint8
    assert out.fps == 24
    assert out.audio is not None and out.audio.dtype == np.float32
    assert out.audio.shape[0] == 2
    assert out.sample_rate == 16000
    assert out.audio.shape[1] / out.sample_rate == pytest.approx(121 / 24, abs=0.05)
    assert np.abs(out.audio).max() <= 1.0
    assert out.info["rendered_frames"] == 121


def test_renders_the_longest_duration_in_one_call(ltx2_engine: LTX2Engine) -> None:
    out = ltx2_engine.generate(job(num_frames=360, width=1080, height=1920), ignore)

    assert out.frames.array().shape == (361, 64, 32, 3)
    assert out.audio is not None
    assert out.audio.shape[1] / out.sample_rate == pytest.approx(361 / 24, abs=0.05)


def test_frame_count_beyond_capabilities_is_an_error(ltx2_engine: LTX2Engine) -> None:
    with pytest.raises(ValueError, match="max_frames"):
        ltx2_engine.generate(job(num_frames=362), ignore)


def test_exactly_one_transformer_pass_per_step(
    ltx2_engine: LTX2Engine, forward_calls: Watch
) -> None:
    passes = forward_calls(ltx2_engine.pipeline.transformer)

    out = ltx2_engine.generate(job(end_image=Image.new("RGB", (640, 360), BLUE)), ignore)

    assert ltx2_engine.steps == 2
    assert passes() == ltx2_engine.steps
    assert out.info["transformer_passes"] == out.info["steps"] == ltx2_engine.steps


def test_no_audio_when_not_asked(ltx2_engine: LTX2Engine) -> None:
    out = ltx2_engine.generate(job(generate_audio=False), ignore)

    assert out.audio is None
    assert out.sample_rate == 0
    assert out.frames.array().shape[0] == 121


def keyframe_times(ltx2_engine: LTX2Engine, video_job: VideoJob) -> list[float]:
    """Start times (s) of the tokens appended after the video's own latent tokens."""
    seen: list[torch.Tensor] = []

    def hook(_module: object, _args: object, kwargs: dict[str, Any]) -> None:
        seen.append(kwargs["video_coords"])

    transformer = ltx2_engine.pipeline.transformer
    handle = transformer.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        ltx2_engine.generate(video_job, ignore)
    finally:
        handle.remove()
    latent_frames = (121 - 1) // 8 + 1
    base_tokens = latent_frames * (32 // 32) * (64 // 32)
    return sorted(set(seen[0][0, 0, base_tokens:, 0].tolist()))


def test_end_image_is_a_keyframe_at_the_last_kept_frame(ltx2_engine: LTX2Engine) -> None:
    end_job = job(end_image=Image.new("RGB", (640, 360), BLUE))

    # diffusers would put a latent index of -1 at frame 121 - 8 = 113; it belongs at frame 119,
    # the last of the 120 frames the worker keeps.
    assert keyframe_times(ltx2_engine, end_job) == [pytest.approx(119 / 24)]
    assert keyframe_times(ltx2_engine, job()) == []
    out = ltx2_engine.generate(end_job, ignore)
    assert out.info["end_image_frame"] == 119
    assert ltx2_engine.pipeline.keyframe_pixel_frame is None  # reset after the call


def test_progress_reports_each_step(ltx2_engine: LTX2Engine) -> None:
    values: list[float] = []

    ltx2_engine.generate(job(), values.append)

    assert values == [0.5, 1.0]


def test_cancel_stops_at_the_next_step(ltx2_engine: LTX2Engine, forward_calls: Watch) -> None:
    passes = forward_calls(ltx2_engine.pipeline.transformer)

    def cancel(_: float) -> None:
        raise EngineCancelled

    with pytest.raises(EngineCancelled):
        ltx2_engine.generate(job(), cancel)
    assert passes() == 1


def test_same_seed_same_video_and_audio(ltx2_engine: LTX2Engine) -> None:
    a = ltx2_engine.generate(job(num_frames=9), ignore)
    b = ltx2_engine.generate(job(num_frames=9), ignore)
    c = ltx2_engine.generate(job(num_frames=9, seed=8), ignore)

    assert np.array_equal(a.frames.array(), b.frames.array())
    assert a.audio is not None and b.audio is not None and c.audio is not None
    assert np.array_equal(a.audio, b.audio)
    assert not np.array_equal(a.frames.array(), c.frames.array())
    assert not np.array_equal(a.audio, c.audio)


def test_without_a_seed_one_is_drawn_and_reported(ltx2_engine: LTX2Engine) -> None:
    first = ltx2_engine.generate(job(num_frames=9, seed=None), ignore)
    seed = first.info["seed"]
    assert isinstance(seed, int)

    again = ltx2_engine.generate(job(num_frames=9, seed=seed), ignore)

    assert np.array_equal(first.frames.array(), again.frames.array())


def test_elements_must_be_composed_before(ltx2_engine: LTX2Engine) -> None:
    element = Element(frontal=Image.new("RGB", (64, 64), BLUE))

    with pytest.raises(ValueError, match="compose"):
        ltx2_engine.generate(job(elements=(element,)), ignore)


def test_load_options_choose_dtype_tiling_and_steps(load_options: LoadOptions) -> None:
    options = replace(load_options, dtype="bfloat16", vae_tiling=True, num_inference_steps=1)
    engine = load_engine("tiny-ltx2", options)  # reuses the session's build

    assert isinstance(engine, LTX2Engine)
    assert engine.pipeline.transformer.dtype == torch.bfloat16
    assert engine.pipeline.vae.use_tiling
    out = engine.generate(job(num_frames=9), ignore)
    assert out.frames.array().shape == (9, 32, 64, 3)
    assert out.info["transformer_passes"] == out.info["steps"] == 1


def test_auto_device_and_dtype_and_unknown_dtype() -> None:
    cuda = torch.cuda.is_available()
    device = resolve_device("auto")

    assert device.type == ("cuda" if cuda else "cpu")
    assert resolve_dtype("auto", device) == (torch.bfloat16 if cuda else torch.float32)
    with pytest.raises(ValueError, match="unknown dtype 'float8'"):
        resolve_dtype("float8", device)
