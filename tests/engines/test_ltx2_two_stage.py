"""LTX-2 in two stages on tiny random weights: half size → latent upsampler ×2 → refinement.

The tiny preset runs the path the LTX-2.5 presets run (``ltx2.5-distilled``, ``ltx2.5-quality``):
the same code, real diffusers classes, real shapes; only the weights are random.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pytest
import torch
from diffusers.pipelines.ltx2.latent_upsampler import LTX2LatentUpsamplerModel
from diffusers.pipelines.ltx2.pipeline_ltx2_latent_upsample import LTX2LatentUpsamplePipeline
from diffusers.pipelines.ltx2.utils import DISTILLED_SIGMA_VALUES, STAGE_2_DISTILLED_SIGMA_VALUES
from diffusers.schedulers.scheduling_flow_match_euler_discrete import (
    FlowMatchEulerDiscreteScheduler,
)
from PIL import Image

from kinema.engines.base import EngineCancelled, VideoOutput
from kinema.engines.geometry import working_size
from kinema.engines.ltx2 import (
    DISTILLED_SETTINGS,
    QUALITY_SETTINGS,
    TINY_TWO_STAGE_SETTINGS,
    LTX2Engine,
    load,
)
from kinema.engines.presets import LTX25_DISTILLED, LTX25_QUALITY, TINY_LTX2, TINY_LTX2_TWO_STAGE
from kinema.engines.registry import LoadOptions
from kinema.engines.tiny import build_tiny_ltx2
from kinema.engines.weights import WeightsMissing
from tests.engines.conftest import BLUE, Watch, ignore
from tests.engines.conftest import video_job as job

pytestmark = pytest.mark.engines

LATENT_FRAMES = (121 - 1) // 8 + 1


@dataclass
class Pass:
    """What one transformer call saw."""

    latent_size: tuple[int, int]
    sigma: float
    hidden: torch.Tensor
    token_timesteps: torch.Tensor
    coords: torch.Tensor


@contextmanager
def recording(engine: LTX2Engine) -> Iterator[list[Pass]]:
    seen: list[Pass] = []

    def hook(_module: object, _args: object, kwargs: dict[str, Any]) -> None:
        seen.append(
            Pass(
                latent_size=(kwargs["height"], kwargs["width"]),
                sigma=float(kwargs["sigma"][0]),
                hidden=kwargs["hidden_states"].detach().clone(),
                token_timesteps=kwargs["timestep"][0].detach().clone(),
                coords=kwargs["video_coords"][0].detach().clone(),
            )
        )

    handle = engine.pipeline.transformer.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield seen
    finally:
        handle.remove()


def test_loads_the_upsampler_from_its_subfolder(ltx2_two_stage_engine: LTX2Engine) -> None:
    refiner = ltx2_two_stage_engine.refiner

    assert refiner is not None
    assert isinstance(refiner.upsample, LTX2LatentUpsamplePipeline)
    assert isinstance(refiner.upsample.latent_upsampler, LTX2LatentUpsamplerModel)
    assert refiner.upsample.vae is ltx2_two_stage_engine.pipeline.vae  # shared, not a copy
    assert refiner.sigmas == tuple(STAGE_2_DISTILLED_SIGMA_VALUES)
    assert ltx2_two_stage_engine.capabilities.size_multiple == 64
    assert ltx2_two_stage_engine.total_steps == 2 + 3


@pytest.mark.parametrize(
    ("width", "height", "rendered"),
    [(1920, 1080, (64, 128)), (1080, 1920, (128, 64)), (1080, 1080, (128, 128))],
)
def test_renders_the_grid_frame_count_at_the_working_size_with_audio(
    ltx2_two_stage_engine: LTX2Engine, width: int, height: int, rendered: tuple[int, int]
) -> None:
    out = ltx2_two_stage_engine.generate(job(width=width, height=height), ignore)

    assert out.frames.array().shape == (121, *rendered, 3)
    assert out.frames.array().dtype == np.uint8
    assert out.info["working_size"] == [rendered[1], rendered[0]]
    assert out.info["first_stage_size"] == [rendered[1] // 2, rendered[0] // 2]
    assert out.audio is not None and out.audio.dtype == np.float32
    assert out.audio.shape[0] == 2
    assert out.sample_rate == 16000
    assert out.audio.shape[1] / out.sample_rate == pytest.approx(121 / 24, abs=0.05)
    assert np.abs(out.audio).max() <= 1.0


def test_no_audio_when_not_asked(ltx2_two_stage_engine: LTX2Engine) -> None:
    out = ltx2_two_stage_engine.generate(job(generate_audio=False), ignore)

    assert out.audio is None
    assert out.sample_rate == 0
    assert out.frames.array().shape == (121, 64, 128, 3)


def test_one_transformer_pass_per_step_in_both_stages(
    ltx2_two_stage_engine: LTX2Engine, forward_calls: Watch
) -> None:
    passes = forward_calls(ltx2_two_stage_engine.pipeline.transformer)

    end_job = job(end_image=Image.new("RGB", (64, 36), BLUE))

    with recording(ltx2_two_stage_engine) as seen:
        out = ltx2_two_stage_engine.generate(end_job, ignore)

    assert passes() == 2 + 3  # stage-1 steps + refinement steps, nothing extra
    assert out.info["transformer_passes"] == out.info["steps"] == 5
    assert out.info["stage_steps"] == [2, 3]
    # Stage 1 at half size (1×2 latent cells per frame), stage 2 at the working size (2×4).
    assert [p.latent_size for p in seen] == [(1, 2)] * 2 + [(2, 4)] * 3


def test_refinement_runs_on_its_sigmas_from_the_upsampled_latents(
    ltx2_two_stage_engine: LTX2Engine,
) -> None:
    pipeline = ltx2_two_stage_engine.pipeline
    scheduler = pipeline.scheduler
    upsampler = ltx2_two_stage_engine.refiner.upsample.latent_upsampler  # type: ignore[union-attr]
    # Replace the upsampled latents with a constant: stage 2 must start from exactly that,
    # re-noised to the first refinement sigma.
    handle = upsampler.register_forward_hook(lambda _m, _a, out: torch.full_like(out, 100.0))
    try:
        with recording(ltx2_two_stage_engine) as seen:
            ltx2_two_stage_engine.generate(job(), ignore)
    finally:
        handle.remove()

    refine = STAGE_2_DISTILLED_SIGMA_VALUES
    assert [p.sigma for p in seen[2:]] == pytest.approx([sigma * 1000 for sigma in refine])
    assert seen[0].sigma == pytest.approx(1000.0)  # stage 1 starts from pure noise
    vae = pipeline.vae
    constant = torch.full((1, 4, 1, 1, 1), 100.0)
    clean = pipeline._normalize_latents(
        constant, vae.latents_mean, vae.latents_std, vae.config.scaling_factor
    )
    free = seen[2].hidden[0, 2 * 4 :]  # after the first latent frame (the start image); no keyframe
    expected = (1 - refine[0]) * float(clean.mean())
    assert float(free.mean()) == pytest.approx(expected, abs=0.5)
    assert pipeline.scheduler is scheduler  # the unshifted refinement scheduler was temporary


def test_refinement_sigmas_bypass_the_schedulers_shift(ltx2_two_stage_engine: LTX2Engine) -> None:
    pipeline = ltx2_two_stage_engine.pipeline
    original = pipeline.scheduler
    pipeline.scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)  # as a real config may shift
    try:
        with recording(ltx2_two_stage_engine) as seen:
            ltx2_two_stage_engine.generate(job(num_frames=9), ignore)
    finally:
        pipeline.scheduler = original

    assert seen[1].sigma == pytest.approx(750.0)  # stage 1 keeps the model's shifted schedule
    refine = STAGE_2_DISTILLED_SIGMA_VALUES
    assert [p.sigma for p in seen[2:]] == pytest.approx([sigma * 1000 for sigma in refine])


def test_start_and_end_images_condition_both_stages(ltx2_two_stage_engine: LTX2Engine) -> None:
    end_job = job(end_image=Image.new("RGB", (640, 360), BLUE))

    with recording(ltx2_two_stage_engine) as seen:
        out = ltx2_two_stage_engine.generate(end_job, ignore)

    assert out.info["end_image_frame"] == 119
    for step in seen:
        cells = step.latent_size[0] * step.latent_size[1]
        base = LATENT_FRAMES * cells
        assert step.hidden.shape[1] == base + cells  # one keyframe latent frame appended
        # Start image: the first latent frame is clean (timestep 0) at every step of each stage.
        assert torch.all(step.token_timesteps[:cells] == 0)
        assert torch.all(step.token_timesteps[cells:base] > 0)
        # End image: a clean keyframe whose tokens sit at the true last kept frame, 119.
        assert torch.all(step.token_timesteps[base:] == 0)
        assert sorted(set(step.coords[0, base:, 0].tolist())) == [pytest.approx(119 / 24)]
    assert ltx2_two_stage_engine.pipeline.keyframe_pixel_frame is None


def test_progress_runs_across_both_stages_to_one(ltx2_two_stage_engine: LTX2Engine) -> None:
    values: list[float] = []

    ltx2_two_stage_engine.generate(job(num_frames=9), values.append)

    assert values == [0.2, 0.4, 0.6, 0.8, 1.0]


def test_cancel_in_the_second_stage_stops_there(
    ltx2_two_stage_engine: LTX2Engine, forward_calls: Watch
) -> None:
    passes = forward_calls(ltx2_two_stage_engine.pipeline.transformer)
    scheduler = ltx2_two_stage_engine.pipeline.scheduler
    first_stage = 2 / 5

    def cancel_after_first_stage(value: float) -> None:
        if value > first_stage:
            raise EngineCancelled

    with pytest.raises(EngineCancelled):
        ltx2_two_stage_engine.generate(job(num_frames=9), cancel_after_first_stage)

    assert passes() == 2 + 1  # stage 1, then the first refinement step
    assert ltx2_two_stage_engine.pipeline.scheduler is scheduler  # restored after the refinement
    assert ltx2_two_stage_engine.pipeline.keyframe_pixel_frame is None


def test_same_seed_same_video_and_audio(ltx2_two_stage_engine: LTX2Engine) -> None:
    def run(seed: int) -> VideoOutput:
        return ltx2_two_stage_engine.generate(job(num_frames=9, seed=seed), ignore)

    a, b, c = run(7), run(7), run(8)

    assert np.array_equal(a.frames.array(), b.frames.array())
    assert a.audio is not None and b.audio is not None and c.audio is not None
    assert np.array_equal(a.audio, b.audio)
    assert not np.array_equal(a.frames.array(), c.frames.array())
    assert not np.array_equal(a.audio, c.audio)


@pytest.mark.parametrize(
    ("width", "height", "final", "first"),
    [
        (1920, 1080, (1920, 1088), (960, 544)),
        (1080, 1920, (1088, 1920), (544, 960)),
        (1080, 1080, (1088, 1088), (544, 544)),
    ],
)
def test_production_presets_render_1088_in_two_stages(
    width: int, height: int, final: tuple[int, int], first: tuple[int, int]
) -> None:
    for preset in (LTX25_DISTILLED, LTX25_QUALITY):
        assert working_size(width, height, preset.capabilities) == final
    assert all(side % 64 == 0 for side in final)
    assert (final[0] // 2, final[1] // 2) == first
    assert DISTILLED_SETTINGS.two_stage is not None and QUALITY_SETTINGS.two_stage is not None
    assert DISTILLED_SETTINGS.guidance is None  # distilled: one pass per step in both stages


def test_missing_upsampler_is_reported_as_missing_weights(load_options: LoadOptions) -> None:
    single_stage = build_tiny_ltx2(load_options.models_dir / "tiny-ltx2")  # no latent_upsampler/

    with pytest.raises(WeightsMissing, match="latent_upsampler"):
        load(single_stage, load_options, TINY_LTX2_TWO_STAGE.capabilities, TINY_TWO_STAGE_SETTINGS)


def test_two_stage_needs_a_64_pixel_grid(
    ltx2_two_stage_engine: LTX2Engine, load_options: LoadOptions
) -> None:
    source = load_options.models_dir / TINY_LTX2_TWO_STAGE.name  # built by the engine fixture

    with pytest.raises(ValueError, match="size_multiple divisible by 64"):
        load(source, load_options, TINY_LTX2.capabilities, TINY_TWO_STAGE_SETTINGS)


def test_trained_sigmas_run_as_given_in_the_first_stage(
    ltx2_two_stage_engine: LTX2Engine, load_options: LoadOptions
) -> None:
    """Distilled weights were trained on fixed noise levels: the first stage runs exactly those,
    even under a scheduler that shifts (the production distilled preset ships diffusers'
    DISTILLED_SIGMA_VALUES)."""
    assert DISTILLED_SETTINGS.sigmas == tuple(DISTILLED_SIGMA_VALUES)
    assert DISTILLED_SETTINGS.steps == len(DISTILLED_SIGMA_VALUES)
    source = load_options.models_dir / TINY_LTX2_TWO_STAGE.name  # built by the engine fixture
    settings = replace(TINY_TWO_STAGE_SETTINGS, sigmas=(1.0, 0.6))
    engine = load(source, load_options, TINY_LTX2_TWO_STAGE.capabilities, settings)
    shifting = FlowMatchEulerDiscreteScheduler(shift=3.0)
    engine.pipeline.scheduler = shifting
    with recording(engine) as seen:
        engine.generate(job(num_frames=9), ignore)

    assert [p.sigma for p in seen[:2]] == pytest.approx([1000.0, 600.0])
    assert engine.pipeline.scheduler is shifting  # the unshifted copy was temporary
    # A step count asked for by the operator wins over the trained schedule.
    other = load(
        source,
        replace(load_options, num_inference_steps=3),
        TINY_LTX2_TWO_STAGE.capabilities,
        settings,
    )
    with recording(other) as seen:
        other.generate(job(num_frames=9), ignore)
    assert len(seen) == 3 + 3
