"""The second stage of LTX-2's two-stage generation: settings, loading, schedule and progress.

Stage 1 renders at half the working size and keeps its latents; ``LTX2LatentUpsamplePipeline``
doubles the video latents in space; stage 2 re-noises video and audio latents to the first of a few
refinement sigmas and denoises them at the working size. The calls themselves live in
:mod:`kinema.engines.ltx2`; this module holds what they need and can be read on its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from diffusers.pipelines.ltx2.latent_upsampler import LTX2LatentUpsamplerModel
from diffusers.pipelines.ltx2.pipeline_ltx2_condition import LTX2ConditionPipeline
from diffusers.pipelines.ltx2.pipeline_ltx2_latent_upsample import LTX2LatentUpsamplePipeline
from diffusers.pipelines.ltx2.utils import STAGE_2_DISTILLED_SIGMA_VALUES
from diffusers.schedulers.scheduling_flow_match_euler_discrete import (
    FlowMatchEulerDiscreteScheduler,
)

from kinema.engines.base import Capabilities, ProgressFn
from kinema.engines.diffusion import resolve_device, resolve_dtype
from kinema.engines.registry import LoadOptions
from kinema.engines.tiny import LATENT_UPSAMPLER
from kinema.engines.weights import WeightsMissing


@dataclass(frozen=True)
class TwoStage:
    """A preset's second stage: where its upsampler weights are and how it refines."""

    upsampler_subfolder: str = LATENT_UPSAMPLER
    """Subfolder of the weights holding the ×2 spatial ``LTX2LatentUpsamplerModel`` (LTX-2.5's
    Diffusers repository keeps it outside ``model_index.json``)."""
    refine_sigmas: tuple[float, ...] = tuple(STAGE_2_DISTILLED_SIGMA_VALUES)
    """Noise levels of the refinement, one step each, used as given: the upsampled latents are
    re-noised to the first and denoised from there (the schedule the distilled model learnt)."""


@dataclass(frozen=True)
class Refiner:
    """A loaded second stage: the latent upsampler (sharing the pipeline's VAE) and the schedule."""

    upsample: LTX2LatentUpsamplePipeline
    sigmas: tuple[float, ...]


def load_refiner(
    source: str | Path,
    options: LoadOptions,
    pipeline: LTX2ConditionPipeline,
    two_stage: TwoStage,
    capabilities: Capabilities,
) -> Refiner:
    """Load the ×2 spatial latent upsampler from its subfolder and pair it with the pipeline's VAE.

    The upsampler stays on the device even with CPU offload: it is small next to the transformer,
    and moving only it leaves the offload hooks on the shared VAE alone.
    """
    _check_grid(pipeline, capabilities)
    device = resolve_device(options.device)
    try:
        upsampler = LTX2LatentUpsamplerModel.from_pretrained(
            str(source),
            subfolder=two_stage.upsampler_subfolder,
            dtype=resolve_dtype(options.dtype, device),
        )
    except OSError as exc:
        raise WeightsMissing(
            f"no spatial latent upsampler in {source}/{two_stage.upsampler_subfolder}: two-stage "
            "LTX-2 presets need LTX2LatentUpsamplerModel weights there (see docs/engines.md)"
        ) from exc
    _check_doubles_space(upsampler, two_stage.upsampler_subfolder)
    upsample = LTX2LatentUpsamplePipeline(vae=pipeline.vae, latent_upsampler=upsampler.to(device))
    cast(Any, upsample).set_progress_bar_config(disable=True)
    return Refiner(upsample=upsample, sigmas=two_stage.refine_sigmas)


def unshifted(scheduler: Any) -> FlowMatchEulerDiscreteScheduler:
    """A copy of ``scheduler`` that uses the sigmas it is given unchanged: no dynamic
    (resolution-dependent) shift, a static shift of 1 (the identity), no terminal stretch."""
    return cast(
        FlowMatchEulerDiscreteScheduler,
        FlowMatchEulerDiscreteScheduler.from_config(
            scheduler.config, use_dynamic_shifting=False, shift=1.0, shift_terminal=None
        ),
    )


def stage_callback(progress: ProgressFn, done: int, total: int) -> Callable[..., dict[str, Any]]:
    """``callback_on_step_end`` for one stage of several: reports ``(done + step + 1) / total``.

    Counting whole steps (rather than scaling each stage's fraction) keeps the values exact, so
    the last step of the last stage reports exactly 1.0. ``progress`` may raise
    :class:`~kinema.engines.base.EngineCancelled`, which stops the stage at that step.
    """

    def on_step_end(_pipe: object, step: int, _timestep: object, _kwargs: object) -> dict[str, Any]:
        progress((done + step + 1) / total)
        return {}

    return on_step_end


def _check_grid(pipeline: LTX2ConditionPipeline, capabilities: Capabilities) -> None:
    # Both stages must land on the VAE's grid: the final size on twice its spatial compression.
    grid = 2 * int(pipeline.vae_spatial_compression_ratio)
    if capabilities.size_multiple % grid:
        raise ValueError(
            f"a two-stage LTX-2 preset needs size_multiple divisible by {grid} (half size on the "
            f"VAE's {grid // 2}-pixel grid), got {capabilities.size_multiple}"
        )


def _check_doubles_space(upsampler: LTX2LatentUpsamplerModel, subfolder: str) -> None:
    config = upsampler.config
    rational = bool(config["use_rational_resampler"])
    scale = float(config["rational_spatial_scale"]) if rational else 2.0
    spatial, temporal = bool(config["spatial_upsample"]), bool(config["temporal_upsample"])
    if not spatial or temporal or scale != 2.0:
        raise ValueError(
            f"{subfolder} must hold a ×2 spatial latent upsampler (the second stage renders at "
            f"twice the first's size); its config says spatial={spatial}, temporal={temporal}, "
            f"scale={scale}"
        )
