"""The MP4's two streams for :class:`kinema.media.video.Mp4Writer`: the H.264 encoder opened
(NVENC when asked for and it opens, else libx264) and the AAC track fed as video time passes."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections import deque
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt
from av.video.reformatter import ColorPrimaries, ColorRange, Colorspace, ColorTrc

from kinema.media.encoding import EncoderSettings

AUDIO_RATE = 48_000
"""Sample rate of the AAC track; other input rates are resampled by the encoder."""

NVENC = "h264_nvenc"
_AUDIO_CHUNK = 4096
logger = logging.getLogger(__name__)

Audio = npt.NDArray[np.float32]


def open_mp4(
    path: Path, width: int, height: int, fps: int, encoder: EncoderSettings
) -> tuple[Any, Any, str]:
    """``(container, video stream, codec)``: an MP4 at ``path`` with its H.264 encoder open —
    NVENC when ``encoder.codec`` asks for it (or is ``auto``) and it opens, else libx264 (an
    explicit ``h264_nvenc`` logs one warning per process and reason). Opening is tried for each
    file: a failed NVENC open costs under a millisecond, and a GPU's sessions come and go."""
    if encoder.codec != "libx264" and NVENC in av.codecs_available:
        try:
            container, stream = _start(path, _nvenc_stream, width, height, fps, encoder)
            return container, stream, NVENC
        except av.FFmpegError as exc:
            reason = str(exc)  # no NVIDIA GPU or driver, or no free session
    else:
        reason = "this PyAV build has no h264_nvenc encoder"
    if encoder.codec == NVENC:
        _warn_nvenc_fallback(reason)
    container, stream = _start(path, _x264_stream, width, height, fps, encoder)
    return container, stream, "libx264"


def _start(
    path: Path,
    add: Callable[[Any, int, EncoderSettings], Any],
    width: int,
    height: int,
    fps: int,
    encoder: EncoderSettings,
) -> tuple[Any, Any]:
    container = av.open(
        str(path), mode="w", format="mp4", container_options={"movflags": "+faststart"}
    )
    try:
        stream = add(container, fps, encoder)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        ctx = stream.codec_context
        ctx.colorspace = int(Colorspace.ITU709)
        ctx.color_primaries = int(ColorPrimaries.BT709)
        ctx.color_trc = int(ColorTrc.BT709)
        ctx.color_range = int(ColorRange.MPEG)
        ctx.open()  # now, so a bad setting or a missing GPU shows here, not mid-way
    except BaseException:
        with contextlib.suppress(Exception):
            container.close()
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        raise
    return container, stream


def _x264_stream(container: Any, fps: int, encoder: EncoderSettings) -> Any:
    stream = container.add_stream("libx264", rate=fps)
    options = {"crf": str(encoder.crf), "preset": encoder.preset}
    if encoder.tune is not None:
        options["tune"] = encoder.tune
    stream.options = options
    # Frame threads, as the ffmpeg command line has them: PyAV's default (slice threads)
    # measured 15-20% slower for the same bytes.
    stream.codec_context.thread_type = "FRAME"
    stream.codec_context.thread_count = encoder.threads
    return stream


def _nvenc_stream(container: Any, fps: int, encoder: EncoderSettings) -> Any:
    stream = container.add_stream(NVENC, rate=fps)
    stream.options = {"preset": encoder.nvenc_preset, "rc": "vbr", "cq": str(encoder.cq)}
    stream.codec_context.bit_rate = 0  # constant quality: no bitrate target
    return stream


@functools.cache
def _warn_nvenc_fallback(reason: str) -> None:
    logger.warning("media.codec = h264_nvenc cannot be used (%s); encoding with libx264", reason)


class AudioTrack:
    """Appended planar float parts at the input rate, fed to an AAC stream (it resamples to
    48 kHz) in chunks as the video's time passes."""

    def __init__(self, container: Any, rate: int, bitrate: int) -> None:
        self._container = container
        self._stream = container.add_stream("aac", rate=AUDIO_RATE, layout="stereo")
        self._stream.bit_rate = bitrate
        self.rate = rate
        self._parts: deque[Audio] = deque()
        self._sent = 0  # samples encoded
        self._held = 0  # samples appended, not encoded

    def append(self, samples: Audio) -> None:
        if samples.shape[1]:
            self._parts.append(samples)
            self._held += samples.shape[1]

    def send_until(self, until: Fraction) -> None:
        """Encode the held chunks that start before ``until`` seconds."""
        while self._held and Fraction(self._sent, self.rate) < until:
            chunk = self._take(_AUDIO_CHUNK)
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
            frame.sample_rate = self.rate
            frame.pts = self._sent
            frame.time_base = Fraction(1, self.rate)
            self._container.mux(self._stream.encode(frame))
            self._sent += chunk.shape[1]

    def finish(self) -> None:
        """Encode what is held and flush the encoder."""
        while self._held:
            self.send_until(Fraction(self._sent + 1, self.rate))
        self._container.mux(self._stream.encode(None))

    def _take(self, count: int) -> Audio:
        pieces = []
        while count and self._parts:
            head = self._parts[0]
            if head.shape[1] <= count:
                pieces.append(self._parts.popleft())
            else:
                pieces.append(head[:, :count])
                self._parts[0] = head[:, count:]
            count -= pieces[-1].shape[1]
            self._held -= pieces[-1].shape[1]
        return np.ascontiguousarray(pieces[0] if len(pieces) == 1 else np.concatenate(pieces, 1))
