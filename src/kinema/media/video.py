"""MP4 output (H.264 + AAC) with PyAV, and a probe for what a file really holds."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path
from typing import Any, TypedDict

import av
import numpy as np
import numpy.typing as npt
from av.video.reformatter import ColorPrimaries, ColorRange, Colorspace, ColorTrc

AUDIO_RATE = 48_000
"""Sample rate of the AAC track; other input rates are resampled by the encoder."""

_AUDIO_CHUNK = 4096


class MediaInfo(TypedDict):
    """What :func:`probe_mp4` reports. Audio fields are None when there is no audio stream."""

    width: int
    height: int
    fps: float
    frames: int
    duration: float
    has_audio: bool
    video_codec: str
    audio_codec: str | None
    audio_duration: float | None
    audio_sample_rate: int | None
    audio_channels: int | None


def encode_mp4(
    path: Path,
    frames: npt.NDArray[np.uint8],
    fps: int,
    audio: npt.NDArray[np.float32] | None,
    sample_rate: int,
    *,
    preset: str = "veryfast",
    crf: int = 18,
    audio_bitrate: int = 192_000,
    check: Callable[[], None] | None = None,
) -> None:
    """Write ``frames`` (``[T, H, W, 3]`` RGB uint8) and optional ``audio`` to an MP4 at ``path``.

    Video: H.264 (libx264, yuv420p, BT.709 limited range, ``crf``/``preset``), ``+faststart``
    so playback can begin before the download ends. Audio (``[C, S]`` float32 in -1..1, C of 1
    or 2, at ``sample_rate``): AAC stereo at 48 kHz; ``None`` writes no audio stream. The file
    appears at ``path`` only when complete. Raises ``ValueError`` for malformed arrays.
    ``check`` is called before each frame is encoded; what it raises stops the encoding (and
    leaves no file).
    """
    _check_frames(frames, fps)
    stereo = None if audio is None else _as_stereo(audio, sample_rate)
    partial = path.with_name(f".{path.name}.partial")
    try:
        _write(partial, frames, fps, stereo, sample_rate, preset, crf, audio_bitrate, check)
        os.replace(partial, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()


def _check_frames(frames: npt.NDArray[np.uint8], fps: int) -> None:
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        raise ValueError(f"frames must be [T, H, W, 3] with T > 0, got {frames.shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {frames.dtype}")
    height, width = frames.shape[1:3]
    if height % 2 or width % 2:
        raise ValueError(f"yuv420p needs even dimensions, got {width}x{height}")
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")


def _as_stereo(audio: npt.NDArray[np.float32], sample_rate: int) -> npt.NDArray[np.float32]:
    if audio.ndim != 2 or audio.shape[0] not in (1, 2):
        raise ValueError(f"audio must be [1 or 2, samples], got {audio.shape}")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    stereo = np.repeat(audio, 2, axis=0) if audio.shape[0] == 1 else audio
    return np.ascontiguousarray(np.clip(stereo, -1.0, 1.0), dtype=np.float32)


def _write(
    partial: Path,
    frames: npt.NDArray[np.uint8],
    fps: int,
    audio: npt.NDArray[np.float32] | None,
    sample_rate: int,
    preset: str,
    crf: int,
    audio_bitrate: int,
    check: Callable[[], None] | None,
) -> None:
    with av.open(
        str(partial), mode="w", format="mp4", container_options={"movflags": "+faststart"}
    ) as container:
        video = _add_video(container, frames, fps, preset, crf)
        feed = None if audio is None else _AudioFeed(container, audio, sample_rate, audio_bitrate)
        for index, frame in enumerate(_yuv_frames(frames, fps)):
            if check is not None:
                check()
            if feed is not None:
                # Interleave: the audio that starts before this frame ends goes first.
                feed.send_until(Fraction(index + 1, fps))
            container.mux(video.encode(frame))
        if feed is not None:
            feed.finish()
        container.mux(video.encode(None))


def _add_video(
    container: Any, frames: npt.NDArray[np.uint8], fps: int, preset: str, crf: int
) -> Any:
    stream = container.add_stream("libx264", rate=fps)
    stream.width = int(frames.shape[2])
    stream.height = int(frames.shape[1])
    stream.pix_fmt = "yuv420p"
    stream.options = {"crf": str(crf), "preset": preset}
    ctx = stream.codec_context
    ctx.colorspace = int(Colorspace.ITU709)
    ctx.color_primaries = int(ColorPrimaries.BT709)
    ctx.color_trc = int(ColorTrc.BT709)
    ctx.color_range = int(ColorRange.MPEG)
    return stream


def _yuv_frames(frames: npt.NDArray[np.uint8], fps: int) -> Iterator[av.VideoFrame]:
    """Frames converted to yuv420p one step ahead on a helper thread (swscale drops the GIL)."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="yuv") as pool:
        ahead = pool.submit(_video_frame, frames[0], 0, fps)
        for index in range(1, len(frames) + 1):
            frame = ahead.result()
            if index < len(frames):
                ahead = pool.submit(_video_frame, frames[index], index, fps)
            yield frame


def _video_frame(rgb: npt.NDArray[np.uint8], index: int, fps: int) -> av.VideoFrame:
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
    # Convert here with explicit BT.709 matrices; swscale's implicit default is BT.601.
    frame = frame.reformat(
        format="yuv420p", dst_colorspace=Colorspace.ITU709, dst_color_range=ColorRange.MPEG
    )
    frame.pts = index
    frame.time_base = Fraction(1, fps)
    return frame


class _AudioFeed:
    """Feeds planar float chunks at the input rate to an AAC stream (it resamples to 48 kHz)."""

    def __init__(
        self, container: Any, audio: npt.NDArray[np.float32], sample_rate: int, bitrate: int
    ) -> None:
        self._container = container
        self._stream = container.add_stream("aac", rate=AUDIO_RATE, layout="stereo")
        self._stream.bit_rate = bitrate
        self._audio = audio
        self._rate = sample_rate
        self._next = 0

    def send_until(self, until: Fraction) -> None:
        """Encode every chunk that starts before ``until`` seconds."""
        total = self._audio.shape[1]
        while self._next < total and Fraction(self._next, self._rate) < until:
            chunk = np.ascontiguousarray(self._audio[:, self._next : self._next + _AUDIO_CHUNK])
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
            frame.sample_rate = self._rate
            frame.pts = self._next
            frame.time_base = Fraction(1, self._rate)
            self._container.mux(self._stream.encode(frame))
            self._next += _AUDIO_CHUNK

    def finish(self) -> None:
        """Encode what is left and flush the encoder."""
        self.send_until(Fraction(self._audio.shape[1] + 1, self._rate))
        self._container.mux(self._stream.encode(None))


def probe_mp4(path: Path) -> MediaInfo:
    """Open ``path`` and report its size, rate, exact frame count, durations and codecs."""
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError(f"{path} has no video stream")
        video = container.streams.video[0]
        audio = container.streams.audio[0] if container.streams.audio else None
        rate = video.average_rate or video.guessed_rate or video.base_rate
        info = MediaInfo(
            width=int(video.codec_context.width),
            height=int(video.codec_context.height),
            fps=float(rate) if rate else 0.0,
            frames=int(video.frames),
            duration=_seconds(video, container),
            has_audio=audio is not None,
            video_codec=str(video.codec_context.name),
            audio_codec=None if audio is None else str(audio.codec_context.name),
            audio_duration=None if audio is None else _seconds(audio, container),
            audio_sample_rate=None if audio is None else int(audio.codec_context.sample_rate),
            audio_channels=None if audio is None else int(audio.codec_context.layout.nb_channels),
        )
    if info["frames"] <= 0:
        info["frames"] = _count_frames(path)
    return info


def _seconds(stream: Any, container: Any) -> float:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    return float(container.duration or 0) / av.time_base


def _count_frames(path: Path) -> int:
    """Decode-count the frames when the container does not store the count."""
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))
