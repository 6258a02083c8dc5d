"""MP4 output (H.264 + AAC) with PyAV, streamed from chunks of frames, and a probe for what a
file really holds."""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Any, TypedDict, cast

import av
import numpy as np
import numpy.typing as npt
from av.video.reformatter import ColorRange, Colorspace

from kinema.media.encoding import EncoderSettings
from kinema.media.streams import AUDIO_RATE, AudioTrack, open_mp4

__all__ = ["AUDIO_RATE", "ENCODE_CHUNK", "QUEUE_CHUNKS", "MediaInfo", "Mp4Writer", "encode_mp4"]

QUEUE_CHUNKS = 2
"""Chunks handed to a writer that may wait for its encoder thread: with the one it encodes
and the one its caller holds, at most ``QUEUE_CHUNKS + 2`` chunks are alive."""

ENCODE_CHUNK = 8
"""Frames per chunk when :func:`encode_mp4` streams a whole array."""

_STOP = object()

Frames = npt.NDArray[np.uint8]
Audio = npt.NDArray[np.float32]


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


class _Aborted(Exception):
    """The writer was aborted: its thread stops at the next frame."""


class Mp4Writer:
    """Writes an MP4 at ``path`` from frames given in chunks, encoding on a thread of its own.

    Video: H.264 (see :class:`~kinema.media.encoding.EncoderSettings`; :attr:`codec` says
    which encoder opened), yuv420p converted with explicit BT.709 limited-range matrices,
    ``+faststart`` so playback can begin before the download ends. Audio (``audio_rate`` not
    None): AAC stereo at 48 kHz from the samples given to :meth:`write_audio`, interleaved with
    the video by time. The file appears at ``path`` only when :meth:`close` succeeds; a failure
    or :meth:`abort` leaves none.

    :meth:`write_frames` hands a chunk to the encoder thread through a queue of
    :data:`QUEUE_CHUNKS` and blocks while it is full, so a producer faster than the encoder
    (a VAE decode, which drops the GIL) overlaps with it in bounded memory. A chunk must not
    be changed after it is handed over. ``check`` is called on the encoder thread before each
    frame; what it raises (a cancel), like any error of the encoder, stops the thread and is
    raised again by the next :meth:`write_frames`, :meth:`write_audio` or :meth:`close`.
    Used as a context manager, an exception in the block aborts. Raises ``ValueError`` for a
    bad size, rate or chunk, and PyAV's error when the encoder does not open.
    """

    def __init__(
        self,
        path: Path,
        *,
        width: int,
        height: int,
        fps: int,
        audio_rate: int | None,
        encoder: EncoderSettings = EncoderSettings(),  # noqa: B008 (frozen)
        check: Callable[[], None] | None = None,
        audio_bitrate: int = 192_000,
    ) -> None:
        _check_geometry(width, height, fps, audio_rate)
        self._path = path
        self._partial = path.with_name(f".{path.name}.partial")
        self._shape = (height, width, 3)
        self._fps = fps
        self._check = check
        self._container, self._video, self._codec = open_mp4(
            self._partial, width, height, fps, encoder
        )
        self._audio = None
        if audio_rate is not None:
            self._audio = AudioTrack(self._container, audio_rate, audio_bitrate)
        self._queue: queue.Queue[object] = queue.Queue(maxsize=QUEUE_CHUNKS)
        self._error: BaseException | None = None
        self._aborting = threading.Event()
        self._closed = False
        self._frames = 0
        self._thread = threading.Thread(target=self._run, name="mp4-writer", daemon=True)
        self._thread.start()

    @property
    def codec(self) -> str:
        """The encoder that opened: ``libx264`` or ``h264_nvenc``."""
        return self._codec

    @property
    def frames_written(self) -> int:
        """Frames encoded so far."""
        return self._frames

    def write_frames(self, chunk: Frames) -> None:
        """Queue ``chunk`` (``[t, h, w, 3]`` uint8 RGB) to be encoded after the rest. Frames of
        another size than the writer's are scaled to it (bicubic, aspect not kept) in the same
        swscale pass that converts them to YUV."""
        if (
            chunk.ndim != 4
            or chunk.shape[3] != 3
            or chunk.dtype != np.uint8
            or 0 in chunk.shape[1:3]
        ):
            raise ValueError(
                f"frames must be uint8 [t, h, w, 3] (scaled to this writer's "
                f"{self._shape[1]}x{self._shape[0]}), got {chunk.dtype} {list(chunk.shape)}"
            )
        if len(chunk):
            self._put(chunk)

    def write_audio(self, samples: Audio) -> None:
        """Append ``samples`` (``[1 or 2, S]`` float in -1..1 at ``audio_rate``) to the track.
        Give a part's audio before its frames, so the two interleave as they are encoded."""
        if self._audio is None:
            raise ValueError("this writer has no audio stream (audio_rate=None)")
        self._put(_AudioPart(_as_stereo(samples, self._audio.rate)))

    def close(self) -> None:
        """Encode what is queued, flush the encoders, finish the file and move it to ``path``;
        raises the encoder thread's error (and leaves no file) if it failed."""
        if self._closed:
            raise ValueError("the writer is closed")
        self._closed = True
        if self._error is None:
            self._queue.put(_STOP)  # ends: the thread takes it, or fails and empties the queue
        self._thread.join()
        try:
            self._raise_failure()
            os.replace(self._partial, self._path)
        finally:
            _remove(self._partial)

    def abort(self) -> None:
        """Stop the encoder thread at its next frame and remove the partial file."""
        self._closed = True
        self._aborting.set()
        self._drain()
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(_STOP)
        self._thread.join()
        _remove(self._partial)

    def __enter__(self) -> Mp4Writer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self.abort()
        elif not self._closed:
            self.close()

    # The caller's side ---------------------------------------------------------------------

    def _put(self, item: object) -> None:
        if self._closed:
            raise ValueError("the writer is closed")
        self._raise_failure()
        # Blocks while the queue is full. A failing thread sets its error, then empties the
        # queue, so this put always ends and the next call raises.
        self._queue.put(item)

    def _raise_failure(self) -> None:
        if self._error is not None:
            raise self._error

    def _drain(self) -> None:
        with contextlib.suppress(queue.Empty):
            while True:
                self._queue.get_nowait()

    # The encoder thread --------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while (item := self._queue.get()) is not _STOP:
                if isinstance(item, _AudioPart):
                    assert self._audio is not None
                    self._audio.append(item.samples)
                else:
                    self._encode(cast(Frames, item))
            if self._aborting.is_set():
                raise _Aborted
            self._finish()
        except BaseException as exc:  # re-raised on the caller's thread
            self._error = exc
            self._drain()
            with contextlib.suppress(Exception):
                self._container.close()

    def _encode(self, chunk: Frames) -> None:
        for rgb in chunk:
            if self._aborting.is_set():
                raise _Aborted
            if self._check is not None:
                self._check()
            frame = _video_frame(rgb, self._frames, self._fps, self._shape)
            if self._audio is not None:
                # Interleave: the audio that starts before this frame ends goes first.
                self._audio.send_until(Fraction(self._frames + 1, self._fps))
            self._container.mux(self._video.encode(frame))
            self._frames += 1

    def _finish(self) -> None:
        if self._audio is not None:
            self._audio.finish()
        self._container.mux(self._video.encode(None))
        self._container.close()


class _AudioPart:
    __slots__ = ("samples",)

    def __init__(self, samples: Audio) -> None:
        self.samples = samples


def encode_mp4(
    path: Path,
    frames: Frames,
    fps: int,
    audio: Audio | None,
    sample_rate: int,
    *,
    encoder: EncoderSettings = EncoderSettings(),  # noqa: B008 (frozen)
    audio_bitrate: int = 192_000,
    check: Callable[[], None] | None = None,
) -> str:
    """Write ``frames`` (``[T, H, W, 3]`` RGB uint8) and optional ``audio`` (``[C, S]`` float32
    in -1..1, C of 1 or 2, at ``sample_rate``; None: no audio stream) to an MP4 at ``path``
    with an :class:`Mp4Writer`, in chunks of :data:`ENCODE_CHUNK` frames. Returns the codec
    used. Raises ``ValueError`` for malformed arrays; what ``check`` raises stops the encoding
    and leaves no file."""
    _check_frames(frames, fps)
    stereo = None if audio is None else _as_stereo(audio, sample_rate)
    height, width = frames.shape[1:3]
    with Mp4Writer(
        path,
        width=width,
        height=height,
        fps=fps,
        audio_rate=None if stereo is None else sample_rate,
        encoder=encoder,
        check=check,
        audio_bitrate=audio_bitrate,
    ) as writer:
        if stereo is not None:
            writer.write_audio(stereo)
        for start in range(0, len(frames), ENCODE_CHUNK):
            writer.write_frames(frames[start : start + ENCODE_CHUNK])
        writer.close()
    return writer.codec


def _check_frames(frames: Frames, fps: int) -> None:
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        raise ValueError(f"frames must be [T, H, W, 3] with T > 0, got {frames.shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {frames.dtype}")
    _check_geometry(frames.shape[2], frames.shape[1], fps, None)


def _check_geometry(width: int, height: int, fps: int, audio_rate: int | None) -> None:
    if width <= 0 or height <= 0 or height % 2 or width % 2:
        raise ValueError(f"yuv420p needs even dimensions, got {width}x{height}")
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    if audio_rate is not None and audio_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {audio_rate}")


def _as_stereo(audio: Audio, sample_rate: int) -> Audio:
    if audio.ndim != 2 or audio.shape[0] not in (1, 2):
        raise ValueError(f"audio must be [1 or 2, samples], got {audio.shape}")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    stereo = np.repeat(audio, 2, axis=0) if audio.shape[0] == 1 else audio
    return np.ascontiguousarray(np.clip(stereo, -1.0, 1.0), dtype=np.float32)


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _video_frame(rgb: Frames, index: int, fps: int, shape: tuple[int, int, int]) -> av.VideoFrame:
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
    # Convert here with explicit BT.709 matrices; swscale's implicit default is BT.601.
    frame = frame.reformat(
        width=shape[1],
        height=shape[0],
        format="yuv420p",
        interpolation="BICUBIC",
        dst_colorspace=Colorspace.ITU709,
        dst_color_range=ColorRange.MPEG,
    )
    frame.pts = index
    frame.time_base = Fraction(1, fps)
    return frame


# Probing ------------------------------------------------------------------------------------


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
