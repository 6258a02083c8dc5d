"""Zero-cost engines: no model, only numpy and Pillow (no torch import).

They honour the same interface, working sizes and frame counts as the real engines, so that the
worker, media encoding, storage and HTTP layers can be tested and benchmarked without paying for
a diffusion model.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import numpy.typing as npt
from PIL import Image

from kinema.engines.base import (
    CHUNK_FRAMES,
    Capabilities,
    FrameStream,
    ImageJob,
    ImageOutput,
    ProgressFn,
    VideoJob,
    VideoOutput,
)
from kinema.engines.geometry import grid_frame_count, working_size
from kinema.engines.presets import STATIC_IMAGE, STATIC_VIDEO
from kinema.engines.registry import LoadOptions
from kinema.media.images import fit_image

SAMPLE_RATE = 16000
TONE_HZ = 440.0
TONE_AMPLITUDE = 0.05
"""Quiet (about -26 dBFS) so that a test clip never startles anyone who plays it."""


class StaticVideoEngine:
    """The start image held still (or crossfaded to the end image), with a quiet stereo tone."""

    def __init__(self, capabilities: Capabilities) -> None:
        self.capabilities = capabilities

    def generate(self, job: VideoJob, progress: ProgressFn) -> VideoOutput:
        """Render ``job`` at the working size; ``progress(1.0)`` is reported once, at the end."""
        width, height = working_size(job.width, job.height, self.capabilities)
        count = grid_frame_count(job.num_frames, self.capabilities)
        start = _pixels(fit_image(job.start_image, width, height))
        end = start if job.end_image is None else _pixels(fit_image(job.end_image, width, height))
        frames = FrameStream(count, width, height, _crossfade(start, end, count))
        fps = self.capabilities.fps
        audio = _tone(count / fps) if job.generate_audio else None
        progress(1.0)
        return VideoOutput(
            frames=frames,
            fps=fps,
            audio=audio,
            sample_rate=SAMPLE_RATE if audio is not None else 0,
            info={"engine": "static", "steps": 0, "transformer_passes": 0},
        )


class StaticImageEngine:
    """The source image fitted to the working size; references are accepted and ignored."""

    def __init__(self, capabilities: Capabilities) -> None:
        self.capabilities = capabilities

    def generate(self, job: ImageJob, progress: ProgressFn) -> ImageOutput:
        """Fit the source image; ``progress(1.0)`` is reported once."""
        width, height = working_size(job.width, job.height, self.capabilities)
        image = fit_image(job.image, width, height)
        progress(1.0)
        return ImageOutput(image=image, info={"engine": "static", "steps": 0})


def load_video(options: LoadOptions) -> StaticVideoEngine:
    """Loader of the ``static-video`` preset (there is nothing to load)."""
    return StaticVideoEngine(STATIC_VIDEO.capabilities)


def load_image(options: LoadOptions) -> StaticImageEngine:
    """Loader of the ``static-image`` preset (there is nothing to load)."""
    return StaticImageEngine(STATIC_IMAGE.capabilities)


def _pixels(image: Image.Image) -> npt.NDArray[np.float32]:
    return np.asarray(image, dtype=np.float32)


def _crossfade(
    start: npt.NDArray[np.float32], end: npt.NDArray[np.float32], count: int
) -> Iterator[npt.NDArray[np.uint8]]:
    """The frames, a chunk at a time as they are read (a 15 s clip is 2 GB at 1080p)."""
    # Linear in time: the first frame is exactly the start image, the last exactly the end image.
    weights = np.linspace(0.0, 1.0, count, dtype=np.float32)[:, None, None, None]
    for first in range(0, count, CHUNK_FRAMES):
        w = weights[first : first + CHUNK_FRAMES]
        blended = start[None] * (1.0 - w) + end[None] * w
        yield np.ascontiguousarray(np.rint(blended).clip(0, 255).astype(np.uint8))


def _tone(seconds: float) -> npt.NDArray[np.float32]:
    samples = round(seconds * SAMPLE_RATE)
    t = np.arange(samples, dtype=np.float64) / SAMPLE_RATE
    wave = (TONE_AMPLITUDE * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.float32)
    return np.stack([wave, wave])
