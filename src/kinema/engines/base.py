"""The engine interface: what the worker hands an engine and what it gets back.

Engines run only in the worker process. This module imports neither torch nor diffusers, so the
API process may import it for the capability data of presets.

An engine renders at its own working size and frame count (for example 1088×1920, 121 frames);
the worker then conforms the output to the contract (crop/resize to 1920×1080, exact frame count,
audio trimmed to the duration) in one place, :mod:`kinema.media.conform`.

A video engine's ``generate`` denoises and returns; its frames are decoded only as the worker
reads them (:class:`FrameStream`, a few frames at a time), and each chunk is conformed and
encoded before the next is decoded, so no step ever holds the whole clip.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Iterator, Mapping
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
class PhaseShares:
    """How a run's progress divides among its phases (fractions summing to 1), measured per
    preset: each phase moves the progress through its share only, so the status reaches 1 when
    the output is stored, not when denoising ends. ``denoising`` and ``decoding`` repeat per
    shot, each shot taking its part by its frames; ``decoding`` covers the encoding of the
    frames as they come, ``encoding`` the encoder's finish."""

    loading: float = 0.02
    """Reading and preparing the inputs (and composing elements into the first frame)."""
    denoising: float = 0.78
    decoding: float = 0.16
    encoding: float = 0.02
    storing: float = 0.02

    def __post_init__(self) -> None:
        shares = (self.loading, self.denoising, self.decoding, self.encoding, self.storing)
        if min(shares) < 0 or abs(sum(shares) - 1.0) > 1e-6:
            raise ValueError(f"phase shares must be >= 0 and sum to 1, got {self}")


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
    follows_audio: bool = False
    """Takes a speech track (:attr:`VideoJob.speech`): the video is made to follow it and it is
    the shot's audio. What ``voice_ids`` need."""
    phase_shares: PhaseShares = PhaseShares()
    """Where its runs' time goes, for progress (measured by ``bench/engine_overhead.py``)."""


@dataclass(frozen=True)
class Element:
    frontal: Image.Image
    references: tuple[Image.Image, ...] = ()


@dataclass(frozen=True)
class SpeechTrack:
    """A shot's speech for an engine that follows audio (:attr:`Capabilities.follows_audio`)."""

    samples: npt.NDArray[np.float32]
    """Mono, float32 in -1..1, the shot's length (``num_frames / fps`` seconds)."""
    sample_rate: int


@runtime_checkable
class AudioRate(Protocol):
    """A video engine whose audio has one rate, known before it runs (a speech track is mixed
    at it)."""

    @property
    def sample_rate(self) -> int: ...


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
    speech: SpeechTrack | None = None
    """The shot's audio, given: the video follows it and the output's audio is it (needs
    ``generate_audio`` and an engine that follows audio)."""


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


FrameChunk = npt.NDArray[np.uint8]
"""``[t, H, W, 3]`` RGB frames, consecutive, at the engine's working size."""

CHUNK_FRAMES = 8
"""How many frames :meth:`FrameStream.of` hands over at a time."""


class FrameStream:
    """An engine's frames, in order, as chunks that are made (decoded) as they are read.

    ``count``, ``width`` and ``height`` are known before the first chunk is; the chunks hold
    exactly ``count`` frames of that size (the worker checks). It is read once; :meth:`close`
    stops a stream that is not read to its end (its decoder's memory is freed)."""

    def __init__(self, count: int, width: int, height: int, chunks: Iterable[FrameChunk]) -> None:
        if count <= 0 or width <= 0 or height <= 0:
            raise ValueError(f"a frame stream needs frames, got {count} of {width}x{height}")
        self.count = count
        self.width = width
        self.height = height
        self._chunks = iter(chunks)
        self._all: npt.NDArray[np.uint8] | None = None

    @classmethod
    def of(cls, frames: npt.NDArray[np.uint8], chunk: int = CHUNK_FRAMES) -> FrameStream:
        """The frames of an array already made (``[T, H, W, 3]``), handed over in chunks."""
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"engine frames must be [T, H, W, 3], got {frames.shape}")
        count, height, width = frames.shape[:3]
        return cls(count, width, height, (frames[i : i + chunk] for i in range(0, count, chunk)))

    def __iter__(self) -> Iterator[FrameChunk]:
        return self._chunks

    def array(self) -> npt.NDArray[np.uint8]:
        """Every frame at once, ``[count, H, W, 3]`` (tests and tools; the worker streams).
        Reads the stream; later calls return the same array."""
        if self._all is None:
            parts = list(self._chunks)
            self._all = np.concatenate(parts) if len(parts) > 1 else parts[0]
        return self._all

    def close(self) -> None:
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()


@dataclass
class VideoOutput:
    frames: FrameStream
    """The frames at the engine's working size, decoded as they are read."""
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
