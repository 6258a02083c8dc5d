"""Conform an engine's output to the contract: exact size, exact frame count, exact duration.

Engines render at their own working size, rate and length; the worker passes every engine's
frames through :func:`conform_frames` (chunk by chunk, as they are decoded) and its audio through
:func:`conform_audio`, so every engine's output leaves in the same shape.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import av
import numpy as np
import numpy.typing as npt
from PIL import Image

from kinema.engines.base import FrameStream, VideoOutput
from kinema.media.images import fit_image

Frames = npt.NDArray[np.uint8]
Audio = npt.NDArray[np.float32]


def conform_frames(
    frames: FrameStream,
    source_fps: float,
    *,
    width: int,
    height: int,
    num_frames: int,
    fps: int,
    resize: bool = True,
) -> Iterator[Frames]:
    """The contract's frames made from ``frames`` as its chunks arrive: ``num_frames`` frames
    of ``[height, width, 3]`` uint8 in all, yielded a chunk's worth at a time (a chunk that no
    output frame shows yields nothing).

    Each frame is center-cropped to ``width:height`` and resized (bicubic) to exactly that
    size. ``resize=False`` stops after the crop (frames keep the source's scale, every one the
    same size) for a consumer that scales them itself: :class:`~kinema.media.video.Mp4Writer`
    does it in the pass that converts them to YUV, as ffmpeg's scale filter does — one swscale
    pass instead of four, about 8x less work per frame for a small engine upscaled to 1080p.
    Frame selection follows time when the source lasts at least ``num_frames / fps``
    seconds at its own ``source_fps`` (same rate: the first ``num_frames`` frames); a shorter
    source is stretched by nearest-frame index mapping so its first and last frames land on the
    first and last output frames. Raises ``ValueError`` for chunks that do not match the
    stream's declared size or count.
    """
    if width <= 0 or height <= 0 or num_frames <= 0 or fps <= 0:
        raise ValueError(f"bad target {width}x{height}, {num_frames} frames at {fps} fps")
    indices = frame_indices(frames.count, source_fps or fps, num_frames, fps)
    box = crop_box(frames.width, frames.height, width, height)
    start = 0  # source index of the chunk's first frame
    shown = 0  # output frames made so far
    # swscale drops the GIL, so a chunk's frames scale in parallel.
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        for chunk in frames:
            _check_chunk(chunk, frames)
            end = start + len(chunk)
            if end > frames.count:
                raise ValueError(f"the engine sent more than the {frames.count} frames it declared")
            upto = shown + int(np.searchsorted(indices[shown:], end, side="left"))
            if upto > shown:
                picked = indices[shown:upto] - start
                if resize:
                    yield _resize_frames(chunk, picked, box, width, height, pool)
                else:
                    yield _crop_frames(chunk, picked, box)
            shown, start = upto, end
    if start != frames.count:
        raise ValueError(f"the engine sent {start} of the {frames.count} frames it declared")


def conform_video(
    out: VideoOutput,
    *,
    width: int,
    height: int,
    num_frames: int,
    fps: int,
    generate_audio: bool,
) -> tuple[Frames, Audio | None, int]:
    """All of :func:`conform_frames` at once with the audio conformed too: ``(frames, audio,
    sample_rate)``; for tests and tools (the worker streams). Audio as :func:`conform_audio`;
    None when ``generate_audio`` is False or the engine produced no audio (rate 0 then)."""
    parts = list(
        conform_frames(
            out.frames, out.fps, width=width, height=height, num_frames=num_frames, fps=fps
        )
    )
    frames = np.concatenate(parts) if len(parts) > 1 else parts[0]
    if not generate_audio or out.audio is None:
        return frames, None, 0
    return frames, conform_audio(out.audio, out.sample_rate, num_frames / fps), out.sample_rate


def conform_image(img: Image.Image, width: int, height: int) -> Image.Image:
    """Center-crop ``img`` to ``width:height`` and resize it to exactly that size, in RGB."""
    if img.size == (width, height):
        return img if img.mode == "RGB" else img.convert("RGB")
    return fit_image(img, width, height)


def _check_chunk(chunk: Frames, stream: FrameStream) -> None:
    shape = (stream.height, stream.width, 3)
    if chunk.ndim != 4 or chunk.shape[1:] != shape or chunk.shape[0] == 0:
        raise ValueError(
            f"engine frames must come in [t, {stream.height}, {stream.width}, 3] chunks with "
            f"t > 0, got {chunk.shape}"
        )
    if chunk.dtype != np.uint8:
        raise ValueError(f"engine frames must be uint8, got {chunk.dtype}")


def frame_indices(
    source_count: int, source_fps: float, num_frames: int, fps: int
) -> npt.NDArray[np.intp]:
    """Which source frame each of the ``num_frames`` output frames shows."""
    if source_count * fps >= num_frames * source_fps:
        # The source covers the duration: sample it in time (identity when the rates match).
        times = np.arange(num_frames, dtype=np.float64) * (source_fps / fps)
        return np.minimum(np.floor(times + 1e-6).astype(np.intp), source_count - 1)
    if num_frames == 1:
        return np.zeros(1, dtype=np.intp)
    span = np.arange(num_frames, dtype=np.float64) * ((source_count - 1) / (num_frames - 1))
    return np.rint(span).astype(np.intp)


def crop_box(src_w: int, src_h: int, width: int, height: int) -> tuple[int, int, int, int]:
    """``(left, top, crop_w, crop_h)``: the centered region of the source with aspect ``w:h``."""
    if src_w * height > width * src_h:
        crop_w, crop_h = max(1, round(src_h * width / height)), src_h
    else:
        crop_w, crop_h = src_w, max(1, round(src_w * height / width))
    return (src_w - crop_w) // 2, (src_h - crop_h) // 2, crop_w, crop_h


def _crop_frames(
    source: Frames, indices: npt.NDArray[np.intp], box: tuple[int, int, int, int]
) -> Frames:
    left, top, crop_w, crop_h = box
    return np.ascontiguousarray(source[indices, top : top + crop_h, left : left + crop_w])


def _resize_frames(
    source: Frames,
    indices: npt.NDArray[np.intp],
    box: tuple[int, int, int, int],
    width: int,
    height: int,
    pool: ThreadPoolExecutor,
) -> Frames:
    left, top, crop_w, crop_h = box
    if (crop_w, crop_h) == (width, height):
        return _crop_frames(source, indices, box)
    result = np.empty((len(indices), height, width, 3), dtype=np.uint8)

    def scale(index: int) -> None:
        crop = source[index, top : top + crop_h, left : left + crop_w]
        result[indices == index] = _scale(crop, width, height)

    list(pool.map(scale, np.unique(indices).tolist()))
    return result


def _scale(rgb: Frames, width: int, height: int) -> Frames:
    """Bicubic resize with swscale on planar RGB (per channel, no chroma subsampling).

    About 3x faster than Pillow's resize here; Lanczos costs ~40% more for no visible gain
    at video upscaling factors.
    """
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
    planar = frame.reformat(format="gbrp")
    scaled = planar.reformat(width=width, height=height, format="gbrp", interpolation="BICUBIC")
    return np.asarray(scaled.reformat(format="rgb24").to_ndarray(), dtype=np.uint8)


def conform_audio(audio: Audio, sample_rate: int, seconds: float) -> Audio:
    """Stereo float32 ``[2, round(seconds * sample_rate)]`` in -1..1: trimmed or zero-padded."""
    if audio.ndim == 1:
        audio = audio[np.newaxis, :]
    if audio.ndim != 2 or audio.shape[0] == 0:
        raise ValueError(f"engine audio must be [channels, samples], got {audio.shape}")
    if sample_rate <= 0:
        raise ValueError(f"engine audio needs a positive sample rate, got {sample_rate}")
    stereo = np.repeat(audio[:1], 2, axis=0) if audio.shape[0] == 1 else audio[:2]
    target = round(seconds * sample_rate)
    result = np.zeros((2, target), dtype=np.float32)
    keep = min(target, stereo.shape[1])
    result[:, :keep] = np.nan_to_num(stereo[:, :keep], nan=0.0, posinf=1.0, neginf=-1.0)
    np.clip(result, -1.0, 1.0, out=result)
    return result


CUT_FADE_S = 0.02


def fade_cuts(
    audio: Audio, sample_rate: int, index: int, count: int, fade_s: float = CUT_FADE_S
) -> Audio:
    """Shot ``index`` of ``count``'s audio with a short fade-in after the cut before it and a
    fade-out before the cut after it (shots join end to end with no overlap, so the duration
    stays exact and no click is heard at a hard cut)."""
    if count == 1:
        return audio
    part = audio.copy()
    n = min(max(1, round(fade_s * sample_rate)), part.shape[1])
    ramp = np.linspace(0.0, 1.0, n, dtype=np.float32)
    if index > 0:
        part[:, :n] *= ramp
    if index < count - 1:
        part[:, -n:] *= ramp[::-1]
    return part
