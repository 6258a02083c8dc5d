"""Audio inputs: decode and verify a voice sample (PyAV; safe to import in the API process)."""

from __future__ import annotations

import io
from dataclasses import dataclass

import av

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
