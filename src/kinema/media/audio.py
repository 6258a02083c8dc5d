"""Audio inputs: decode and verify a voice sample, decode it to mono, resample (PyAV; safe to
import in the API process)."""

from __future__ import annotations

import io
from dataclasses import dataclass

import av
import numpy as np
import numpy.typing as npt

from kinema.errors import InvalidInput

ALLOWED_CONTAINERS = {"mp3": "mp3", "wav": "wav", "mov,mp4,m4a,3gp,3g2,mj2": "mp4"}
"""FFmpeg demuxer name → the short name we store (mp4 and mov share one demuxer)."""


@dataclass(frozen=True)
class AudioInfo:
    container: str
    duration_s: float
    sample_rate: int
    channels: int
    longer: bool = False
    """Decoding stopped at ``max_s``: the audio lasts at least ``duration_s``."""


def probe_audio(data: bytes, *, field: str, max_s: float | None = None) -> AudioInfo:
    """Decode the audio frames of ``data`` (so a truncated or corrupt file is caught) and
    report its length; InvalidInput naming ``field`` when it is not mp3/wav/mp4/mov audio.

    With ``max_s``, decoding stops as soon as more than ``max_s`` seconds are decoded
    (``longer``): a few megabytes of low-bitrate MP3 hold hours of audio (3 h in 10.6 MB took
    3.9 s to decode whole), so the work is bounded by ``max_s``, not by the file."""
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            kind = ALLOWED_CONTAINERS.get(container.format.name)
            if kind is None:
                raise InvalidInput(
                    f"{field}: must be mp3, wav, mp4 or mov audio (got {container.format.name})"
                )
            if not container.streams.audio:
                raise InvalidInput(f"{field}: the file has no audio track")
            stream = container.streams.audio[0]
            samples, longer = _decoded_samples(container, stream, max_s)
            rate = stream.codec_context.sample_rate or stream.rate or 0
            channels = stream.codec_context.channels or 0
    except InvalidInput:
        raise
    except (av.FFmpegError, ValueError, OSError) as exc:
        raise InvalidInput(f"{field}: not a readable audio file ({exc})") from exc
    if not rate or not samples:
        raise InvalidInput(f"{field}: the audio track is empty")
    return AudioInfo(
        container=kind,
        duration_s=samples / rate,
        sample_rate=rate,
        channels=channels,
        longer=longer,
    )


def _decoded_samples(
    container: av.container.InputContainer, stream: av.AudioStream, max_s: float | None
) -> tuple[int, bool]:
    """Samples decoded from ``stream``, and whether decoding stopped past ``max_s``."""
    samples = 0
    for frame in container.decode(stream):
        samples += frame.samples
        rate = frame.sample_rate or stream.codec_context.sample_rate
        if max_s is not None and rate and samples > max_s * rate:
            return samples, True
    return samples, False


def decode_mono(
    data: bytes, *, rate: int, field: str, max_s: float | None = None
) -> npt.NDArray[np.float32]:
    """The first audio track of ``data`` as mono float32 at ``rate`` (channels averaged and
    resampled by libswresample), at most ``max_s`` seconds of it. InvalidInput naming ``field``
    when it cannot be decoded; call :func:`probe_audio` first for the format and length rules."""
    resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
    limit = None if max_s is None else int(max_s * rate)
    parts: list[npt.NDArray[np.float32]] = []
    decoded = 0
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.audio:
                raise InvalidInput(f"{field}: the file has no audio track")
            for frame in container.decode(container.streams.audio[0]):
                for out in resampler.resample(frame):
                    parts.append(out.to_ndarray().reshape(-1).astype(np.float32, copy=False))
                    decoded += out.samples
                if limit is not None and decoded >= limit:
                    break
            parts += [
                out.to_ndarray().reshape(-1).astype(np.float32, copy=False)
                for out in resampler.resample(None)
            ]
    except InvalidInput:
        raise
    except (av.FFmpegError, ValueError, OSError) as exc:
        raise InvalidInput(f"{field}: not a readable audio file ({exc})") from exc
    samples = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    return samples[:limit].astype(np.float32, copy=False)


def resample(samples: npt.NDArray[np.float32], rate: int, to_rate: int) -> npt.NDArray[np.float32]:
    """Mono ``samples`` at ``rate`` resampled to ``to_rate`` (libswresample's band-limited
    filter, so pitch and duration are kept), exactly ``round(len * to_rate / rate)`` long."""
    length = round(len(samples) * to_rate / rate)
    if rate == to_rate or not length:
        return samples[:length].astype(np.float32)
    resampler = av.AudioResampler(format="flt", layout="mono", rate=to_rate)
    frame = av.AudioFrame.from_ndarray(
        np.ascontiguousarray(samples, dtype=np.float32)[None, :], format="flt", layout="mono"
    )
    frame.sample_rate = rate
    outs = [*resampler.resample(frame), *resampler.resample(None)]
    out = np.concatenate([o.to_ndarray().reshape(-1) for o in outs]).astype(np.float32)
    return np.pad(out[:length], (0, max(0, length - len(out))))
