"""The engine interface: what the worker hands an engine and what it gets back.

Engines run only in the worker process. This module imports neither torch nor diffusers, so the
API process may import it for the capability data of presets.

An engine renders at its own working size and frame count (for example 1088×1920, 121 frames);
the worker then conforms the output to the contract (crop/resize to 1920×1080, exact frame count,
audio trimmed to the duration) in one place, :mod:`kinema.media.conform`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
from PIL import Image


class Task(enum.StrEnum):
    IMAGE_TO_VIDEO = "image-to-video"
    IMAGE_TO_IMAGE = "image-to-image"


class EngineCancelled(Exception):
    """Raised by a progress callback to stop a generation at the next step."""


ProgressFn = Callable[[float], None]
"""Called with progress in 0..1 after each denoising step; may raise :class:`EngineCancelled`."""


@dataclass(frozen=True)
class Capabilities:
    """What a preset can do, as data (the registry and API read it; nothing branches on names)."""

    task: Task
    fps: int = 24
    max_frames: int = 1
    frame_grid: int = 1
    """Frame counts lie on ``frame_grid * k + 1`` (8 for LTX-2); 1 means any count."""
    size_multiple: int = 16
    audio: bool = False
    max_references: int = 0
    honours_cfg: bool = False
    honours_negative_prompt: bool = False
    max_working_side: int | None = None
    """Cap on the long side the engine renders at; the worker upscales to the contract size."""


@dataclass(frozen=True)
class Element:
    frontal: Image.Image
    references: tuple[Image.Image, ...] = ()


@dataclass(frozen=True)
class VideoJob:
    prompt: str
    negative_prompt: str
    start_image: Image.Image
    width: int
    """Contract output width (1920 for 16:9)."""
    height: int
    num_frames: int
    """Exact contract frame count: duration × fps."""
    fps: int
    cfg_scale: float = 0.5
    generate_audio: bool = True
    end_image: Image.Image | None = None
    elements: tuple[Element, ...] = ()
    seed: int | None = None


@dataclass(frozen=True)
class ImageJob:
    prompt: str
    image: Image.Image
    width: int
    height: int
    elements: tuple[Element, ...] = ()
    seed: int | None = None

    def element_images(self, max_references: int) -> list[Image.Image]:
        """The element images in the order image engines take them after the source (each
        element's frontal, then its references), in RGB. Raises :class:`ValueError` when the
        source plus these exceed ``max_references`` (submit-time checks make that a 400 first)."""
        images = [
            image for element in self.elements for image in (element.frontal, *element.references)
        ]
        if 1 + len(images) > max_references:
            raise ValueError(
                f"{1 + len(images)} images (source + element images) exceed this engine's "
                f"max_references {max_references}"
            )
        return [image.convert("RGB") for image in images]


@dataclass
class VideoOutput:
    frames: npt.NDArray[np.uint8]
    """``[T, H, W, 3]`` RGB at the engine's working size."""
    fps: float
    audio: npt.NDArray[np.float32] | None = None
    """``[channels, samples]`` in -1..1, or None when no audio was asked for."""
    sample_rate: int = 0
    info: Mapping[str, object] = field(default_factory=dict)
    """Extra facts for ``x-output-metadata`` (steps, transformer passes, preset notes)."""


@dataclass
class ImageOutput:
    image: Image.Image
    info: Mapping[str, object] = field(default_factory=dict)


@runtime_checkable
class ImageToVideoEngine(Protocol):
    capabilities: Capabilities

    def generate(self, job: VideoJob, progress: ProgressFn) -> VideoOutput: ...


@runtime_checkable
class ImageToImageEngine(Protocol):
    capabilities: Capabilities

    def generate(self, job: ImageJob, progress: ProgressFn) -> ImageOutput: ...


Engine = ImageToVideoEngine | ImageToImageEngine
