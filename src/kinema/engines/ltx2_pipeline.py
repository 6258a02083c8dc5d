"""``LTX2ConditionPipeline`` with the two changes Kinema's LTX-2 engine needs: its keyframe
condition at an exact pixel frame, and calls run on the sigmas they pass, unshifted."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

import torch
from diffusers.pipelines.ltx2.pipeline_ltx2_condition import LTX2ConditionPipeline

from kinema.engines.ltx2_two_stage import unshifted


class PixelKeyframeLTX2Pipeline(LTX2ConditionPipeline):
    """``LTX2ConditionPipeline`` that can place its keyframe condition at an exact pixel frame.

    diffusers reads a condition's ``index`` as a *latent* frame and puts a keyframe at pixel frame
    ``(index - 1) * 8 + 1``, so ``index=-1`` lands on frame ``num_frames - 8`` and no latent index
    reaches the true last frame. Keyframes are appended tokens whose only tie to time is their
    positional coordinates, and the reference LTX-2 code takes a pixel frame for them; overriding
    the coordinates is therefore the whole fix (no trimming, no lost frames).
    """

    keyframe_pixel_frame: int | None = None

    @contextmanager
    def keyframe_at(self, pixel_frame: int | None) -> Iterator[None]:
        """Place keyframe conditions at ``pixel_frame`` for calls made inside the context."""
        self.keyframe_pixel_frame = pixel_frame
        try:
            yield
        finally:
            self.keyframe_pixel_frame = None

    @contextmanager
    def sigmas_as_given(self) -> Iterator[None]:
        """Run calls inside the context on the ``sigmas`` they pass, without shifting them.

        The pipeline feeds its sigmas through the scheduler, which shifts them when its config
        enables dynamic (resolution-dependent) shifting, a static shift or a terminal stretch. The
        refinement schedule is a set of noise levels the distilled model was trained on, so it
        must arrive unchanged; diffusers' own two-stage example swaps the scheduler the same way.
        """
        pipe = cast(Any, self)  # diffusers registers components dynamically (untyped)
        video, audio = pipe.scheduler, getattr(pipe, "audio_scheduler", None)
        pipe.scheduler = unshifted(video)
        if audio is not None:
            pipe.audio_scheduler = unshifted(audio)
        try:
            yield
        finally:
            pipe.scheduler = video
            if audio is not None:
                pipe.audio_scheduler = audio

    def _prepare_keyframe_coords(
        self,
        keyframe_latent_num_frames: int,
        keyframe_latent_height: int,
        keyframe_latent_width: int,
        pixel_frame_idx: int,
        num_pixel_frames: int,
        fps: float,
        device: torch.device,
    ) -> torch.Tensor:
        if self.keyframe_pixel_frame is not None:
            pixel_frame_idx = self.keyframe_pixel_frame
        return super()._prepare_keyframe_coords(
            keyframe_latent_num_frames=keyframe_latent_num_frames,
            keyframe_latent_height=keyframe_latent_height,
            keyframe_latent_width=keyframe_latent_width,
            pixel_frame_idx=pixel_frame_idx,
            num_pixel_frames=num_pixel_frames,
            fps=fps,
            device=device,
        )
