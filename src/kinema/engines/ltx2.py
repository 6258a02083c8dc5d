"""LTX-2 image → video with synchronized audio, over diffusers' ``LTX2ConditionPipeline``.

The start image conditions frame 0; an end image is a keyframe at the last frame the contract
keeps. Distilled settings throughout: every extra guidance knob is off so that each denoising step
is exactly one transformer pass (see :data:`DISTILLED_GUIDANCE`).

The pipeline returns latents; the audio is decoded at once and the frames as the worker reads
them, a temporal tile at a time (:mod:`kinema.engines.ltx2_decode`).

Two-stage presets (LTX-2.5 to 1080p; :mod:`kinema.engines.ltx2_two_stage`) render at half the
working size and keep the latents, double them with ``LTX2LatentUpsamplePipeline``, then refine
video and audio latents at the working size with a few steps from a reduced noise level before
decoding. Both stages carry the same start and end image conditions and share one progress bar.

A job with a speech track (``VideoJob.speech``, for ``voice_ids``) is audio-driven: the track is
encoded into audio latents (:mod:`kinema.engines.ltx2_audio`) and held frozen in every stage
while the video is denoised (:mod:`kinema.engines.ltx2_frozen_audio`); the output's audio is the
track itself.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import torch
from diffusers.pipelines.ltx2.pipeline_ltx2_condition import LTX2VideoCondition
from diffusers.pipelines.ltx2.utils import DISTILLED_SIGMA_VALUES
from PIL import Image

from kinema.engines.base import Capabilities, ProgressFn, VideoJob, VideoOutput
from kinema.engines.diffusion import count_calls, load_pipeline, seeded_generator, step_callback
from kinema.engines.geometry import grid_frame_count, working_size
from kinema.engines.guidance import GUIDANCE, GuidanceMap
from kinema.engines.ltx2_audio import AudioLatents, encode_audio
from kinema.engines.ltx2_decode import DIFFUSERS_TILES, DecodeTiles, decode_audio, stream_frames
from kinema.engines.ltx2_frozen_audio import frozen_audio
from kinema.engines.ltx2_pipeline import PixelKeyframeLTX2Pipeline
from kinema.engines.ltx2_two_stage import Refiner, TwoStage, load_refiner, stage_callback
from kinema.engines.presets import (
    LTX25_DISTILLED,
    LTX25_QUALITY,
    TINY_LTX2,
    TINY_LTX2_QUALITY,
    TINY_LTX2_TWO_STAGE,
)
from kinema.engines.registry import LoadOptions
from kinema.engines.tiny import build_tiny_ltx2, build_tiny_ltx2_two_stage
from kinema.engines.weights import resolve
from kinema.media.images import fit_image

DISTILLED_GUIDANCE: dict[str, float] = {
    "guidance_scale": 1.0,
    "stg_scale": 0.0,
    "modality_scale": 1.0,
    "guidance_rescale": 0.0,
    # The pipeline replaces a falsy audio value (0 or None) with the video one, so 0 never means
    # "off" for audio; each is set explicitly to its own neutral value instead.
    "audio_guidance_scale": 1.0,
    "audio_stg_scale": 0.0,
    "audio_modality_scale": 1.0,
    "audio_guidance_rescale": 0.0,
}
"""Guidance for distilled weights: no CFG, no STG, no modality isolation → one pass per step."""


@dataclass(frozen=True)
class LTX2Settings:
    """Per-preset knobs that are not capabilities (the API never needs them)."""

    steps: int = 8
    """Denoising steps unless :attr:`LoadOptions.num_inference_steps` overrides them."""
    max_sequence_length: int = 1024
    """Prompt tokens fed to the text encoder."""
    image_crf: int | None = None
    """H.264 CRF the conditioning images are re-compressed at (the model was trained on such
    frames). ``None`` is the model's own default; ``0`` skips the round trip through PyAV."""
    sigmas: tuple[float, ...] | None = None
    """The noise levels distilled weights were trained on, run as given (no scheduler shift)
    for the first (or only) stage; ``None``: the scheduler's own schedule. Ignored when
    :attr:`LoadOptions.num_inference_steps` asks for another number of steps."""
    guidance: GuidanceMap | None = None
    """``None``: distilled weights (one pass per step, ``cfg_scale`` and ``negative_prompt``
    ignored). Otherwise ``cfg_scale`` maps to classifier-free guidance through this map."""
    two_stage: TwoStage | None = None
    """``None``: one pass at the working size. Otherwise half size, upsample ×2, refine; the
    preset's ``size_multiple`` must then be twice the VAE's spatial compression (64)."""
    decode_tiles: DecodeTiles = DIFFUSERS_TILES
    """Temporal tiles of the streaming VAE decode (diffusers' defaults: 16 frames, stride 8)."""


TINY_SETTINGS = LTX2Settings(steps=2, max_sequence_length=16, image_crf=0)
TINY_TWO_STAGE_SETTINGS = dataclasses.replace(TINY_SETTINGS, two_stage=TwoStage())


class LTX2Engine:
    """:class:`~kinema.engines.base.ImageToVideoEngine` over a loaded LTX-2 pipeline."""

    def __init__(
        self,
        pipeline: PixelKeyframeLTX2Pipeline,
        capabilities: Capabilities,
        settings: LTX2Settings,
        steps: int,
        refiner: Refiner | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.capabilities = capabilities
        self.settings = settings
        self.steps = steps
        """First-stage (or only) denoising steps."""
        self.refiner = refiner

    @property
    def total_steps(self) -> int:
        """Denoising steps of one generation, both stages: each is one transformer pass."""
        return self.steps + (0 if self.refiner is None else len(self.refiner.sigmas))

    def generate(self, job: VideoJob, progress: ProgressFn) -> VideoOutput:
        """Render ``job`` at the working size and the grid frame count covering ``job.num_frames``.

        With an end image, its keyframe sits at frame ``job.num_frames - 1``: the last frame left
        once the worker trims the grid's extra frames. Audio is always generated by the model (the
        pipeline has no switch for it) and dropped when ``job.generate_audio`` is false. With a
        speech track, the video is denoised against it frozen in every stage
        (:mod:`kinema.engines.ltx2_frozen_audio`) and the output's audio is the track itself.
        """
        if job.elements:
            raise ValueError("LTX-2 takes no elements; compose them into the start image first")
        width, height = working_size(job.width, job.height, self.capabilities)
        num_frames = grid_frame_count(job.num_frames, self.capabilities)
        end_frame = None if job.end_image is None else job.num_frames - 1
        generator, seed = seeded_generator(job.seed)
        speech = self._speech(job, num_frames)
        shared: dict[str, Any] = {
            "prompt": job.prompt,
            "num_frames": num_frames,
            "frame_rate": float(job.fps),
            "generator": generator,
            "max_sequence_length": self.settings.max_sequence_length,
            "return_dict": False,
        }
        if speech is not None:
            shared["audio_latents"] = speech.latents  # sets the audio length; frozen by the hook
        transformer = cast(torch.nn.Module, self.pipeline.transformer)
        with (
            count_calls(transformer) as passes,
            frozen_audio(transformer, speech) as frozen,
            self.pipeline.keyframe_at(end_frame),
        ):
            if self.refiner is None:
                video, audio = self._one_stage(job, shared, (width, height), progress)
            else:
                video, audio = self._two_stages(job, shared, (width, height), progress)
        info: dict[str, object] = {
            "steps": self.total_steps,
            "guidance_scale": self._guidance(job)["guidance_scale"],
            "transformer_passes": passes.calls,
            "seed": seed,
            "rendered_frames": num_frames,
            "working_size": [width, height],
        }
        if self.refiner is not None:
            info["stage_steps"] = [self.steps, len(self.refiner.sigmas)]
            info["first_stage_size"] = [width // 2, height // 2]
        if end_frame is not None:
            info["end_image_frame"] = end_frame
        if speech is not None:
            info["audio_driven"] = True
            info["frozen_audio_passes"] = frozen.calls
        waveform, rate = self._audio_out(job, audio)
        # Denoised: the audio is decoded now (small), the frames as the worker reads them.
        return VideoOutput(
            frames=stream_frames(self.pipeline.vae, video, self.settings.decode_tiles),
            fps=job.fps,
            audio=waveform,
            sample_rate=rate,
            info=info,
        )

    def _speech(self, job: VideoJob, num_frames: int) -> AudioLatents | None:
        """The job's speech track as audio latents for the rendered clip (``num_frames``)."""
        if job.speech is None:
            return None
        if not job.generate_audio:
            raise ValueError("a speech track is the video's audio: it needs generate_audio")
        track = job.speech
        return encode_audio(
            self.pipeline.audio_vae, track.samples, track.sample_rate, num_frames / job.fps
        )

    def _audio_out(
        self, job: VideoJob, audio: torch.Tensor
    ) -> tuple[npt.NDArray[np.float32] | None, int]:
        """The output's audio: the speech track as given (the worker conforms it), else the
        model's own, decoded; none when not asked for."""
        if not job.generate_audio:
            return None, 0
        if job.speech is not None:
            samples = np.asarray(job.speech.samples, dtype=np.float32)
            return samples[np.newaxis, :], job.speech.sample_rate
        return decode_audio(self.pipeline, audio), self.sample_rate

    def _one_stage(
        self, job: VideoJob, shared: dict[str, Any], size: tuple[int, int], progress: ProgressFn
    ) -> tuple[Any, Any]:
        with self._schedule() as schedule:
            return self._call(
                **shared,
                **self._frame(job, size),
                **schedule,
                output_type="latent",
                callback_on_step_end=step_callback(progress, self.steps),
                **self._guidance(job),
            )

    def _two_stages(
        self, job: VideoJob, shared: dict[str, Any], size: tuple[int, int], progress: ProgressFn
    ) -> tuple[Any, Any]:
        """Half size to latents, upsample the video latents ×2, refine both at ``size``.

        Stage 1 returns denormalized video latents and unpacked audio latents; stage 2 takes them
        as ``latents`` / ``audio_latents``, re-noises them to the first refinement sigma and
        denoises on the refinement sigmas with every guidance off (one pass per step, as in the
        reference two-stage pipelines), then decodes video and audio.
        """
        refiner = cast(Refiner, self.refiner)
        half = (size[0] // 2, size[1] // 2)
        with self._schedule() as schedule:
            video_latents, audio_latents = self._call(
                **shared,
                **self._frame(job, half),
                **schedule,
                output_type="latent",
                callback_on_step_end=stage_callback(progress, 0, self.total_steps),
                **self._guidance(job),
            )
        upsampled = refiner.upsample(
            latents=video_latents,
            width=half[0],
            height=half[1],
            num_frames=shared["num_frames"],
            output_type="latent",
            return_dict=False,
        )[0]
        with self.pipeline.sigmas_as_given():
            return self._call(
                # Stage 1's audio, refined with the video; a speech track's (in shared) instead.
                **{"audio_latents": audio_latents, **shared},
                **self._frame(job, size),
                # The upsampler runs in its own dtype; the denoising loop runs in float32.
                latents=upsampled.float(),
                num_inference_steps=len(refiner.sigmas),
                sigmas=list(refiner.sigmas),
                noise_scale=refiner.sigmas[0],
                output_type="latent",
                callback_on_step_end=stage_callback(progress, self.steps, self.total_steps),
                **DISTILLED_GUIDANCE,
            )

    @contextmanager
    def _schedule(self) -> Iterator[dict[str, Any]]:
        """The first stage's steps: the preset's trained sigmas, unshifted, when it has them
        (and the step count was not overridden); else the scheduler's own schedule."""
        sigmas = self.settings.sigmas
        if sigmas is None or len(sigmas) != self.steps:
            yield {"num_inference_steps": self.steps}
            return
        with self.pipeline.sigmas_as_given():
            yield {"num_inference_steps": self.steps, "sigmas": list(sigmas)}

    def _call(self, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """One pipeline call for latents: video denormalized ``[1, C, F, h, w]``, audio
        denormalized and unpacked (both stages end so; :mod:`kinema.engines.ltx2_decode`
        decodes them)."""
        video, audio = self.pipeline(**kwargs)
        return cast(torch.Tensor, video), cast(torch.Tensor, audio)

    def _frame(self, job: VideoJob, size: tuple[int, int]) -> dict[str, Any]:
        """Size and image conditions for one stage: the conditions are re-encoded at its size."""
        width, height = size
        conditions = self._conditions(job, width, height)
        return {"width": width, "height": height, "conditions": conditions}

    def _guidance(self, job: VideoJob) -> dict[str, object]:
        """Distilled: every guidance off. Otherwise CFG at the mapped scale for video and audio
        with the negative prompt; STG and modality isolation stay off (each costs a pass)."""
        if self.settings.guidance is None:
            return dict(DISTILLED_GUIDANCE)
        scale = self.settings.guidance.scale(job.cfg_scale)
        return {
            **DISTILLED_GUIDANCE,
            "guidance_scale": scale,
            "audio_guidance_scale": scale,
            "negative_prompt": job.negative_prompt if scale > 1.0 else None,
        }

    @property
    def sample_rate(self) -> int:
        """The vocoder's output rate (the waveform's rate, not the audio VAE's mel rate)."""
        return int(self.pipeline.vocoder.config.output_sampling_rate)

    def _conditions(self, job: VideoJob, width: int, height: int) -> list[LTX2VideoCondition]:
        def condition(image: Image.Image, index: int) -> LTX2VideoCondition:
            fitted = fit_image(image, width, height)
            return LTX2VideoCondition(frames=fitted, index=index, crf=self.settings.image_crf)

        conditions = [condition(job.start_image, 0)]
        if job.end_image is not None:
            # Any latent index above 0 makes it a keyframe; its frame comes from keyframe_at().
            conditions.append(condition(job.end_image, -1))
        return conditions


def load(
    source: str | Path,
    options: LoadOptions,
    capabilities: Capabilities,
    settings: LTX2Settings,
) -> LTX2Engine:
    """Load LTX-2 weights from a hub id or local directory into an engine (any LTX-2 preset)."""
    pipeline = load_pipeline(PixelKeyframeLTX2Pipeline, source, options)
    steps = options.num_inference_steps or settings.steps
    refiner = None
    if settings.two_stage is not None:
        refiner = load_refiner(source, options, pipeline, settings.two_stage, capabilities)
    return LTX2Engine(pipeline, capabilities, settings, steps, refiner)


def load_tiny(options: LoadOptions) -> LTX2Engine:
    """Loader of ``tiny-ltx2``: build the random weights once, then load them like real ones."""
    source = options.source or build_tiny_ltx2(options.models_dir / "tiny-ltx2")
    return load(source, options, TINY_LTX2.capabilities, TINY_SETTINGS)


def load_tiny_quality(options: LoadOptions) -> LTX2Engine:
    """Loader of ``tiny-ltx2-quality``: the tiny weights with full-model settings, so that
    ``cfg_scale`` and ``negative_prompt`` take effect (what the full LTX-2.5 preset does)."""
    source = options.source or build_tiny_ltx2(options.models_dir / "tiny-ltx2")
    settings = dataclasses.replace(TINY_SETTINGS, guidance=GUIDANCE["ltx2"])
    return load(source, options, TINY_LTX2_QUALITY.capabilities, settings)


def load_tiny_two_stage(options: LoadOptions) -> LTX2Engine:
    """Loader of ``tiny-ltx2-two-stage``: the tiny weights plus a tiny latent upsampler, run in
    two stages the way the LTX-2.5 presets are."""
    directory = options.models_dir / TINY_LTX2_TWO_STAGE.name
    source = options.source or build_tiny_ltx2_two_stage(directory)
    return load(source, options, TINY_LTX2_TWO_STAGE.capabilities, TINY_TWO_STAGE_SETTINGS)


LTX25_HUB_ID = "Lightricks/LTX-2.5-Diffusers"
DISTILLED_SETTINGS = LTX2Settings(
    steps=len(DISTILLED_SIGMA_VALUES), sigmas=tuple(DISTILLED_SIGMA_VALUES), two_stage=TwoStage()
)
QUALITY_SETTINGS = LTX2Settings(steps=40, guidance=GUIDANCE["ltx2"], two_stage=TwoStage())


def load_distilled(options: LoadOptions) -> LTX2Engine:
    """Loader of ``ltx2.5-distilled``: two stages to the working size (1088 px, cropped later)."""
    source = resolve(LTX25_DISTILLED.name, LTX25_HUB_ID, options)
    return load(source, options, LTX25_DISTILLED.capabilities, DISTILLED_SETTINGS)


def load_quality(options: LoadOptions) -> LTX2Engine:
    """Loader of ``ltx2.5-quality``: the full transformer with classifier-free guidance."""
    source = resolve(LTX25_QUALITY.name, LTX25_HUB_ID, options)
    return load(source, options, LTX25_QUALITY.capabilities, QUALITY_SETTINGS)
