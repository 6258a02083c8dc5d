"""The cleaned reference clip a speech engine clones a voice from, cut from a voice sample.

Pure numpy (and the stdlib ``wave``): safe in the API process, which builds the clip at
create-voice time and stores it beside the sample as ``voices/<id>/reference.wav``.

The rule, on the sample decoded to mono at :data:`REFERENCE_RATE`:

1. **Speech frames.** The sample is cut into 20 ms frames and each frame's RMS level taken in
   dBFS. The noise floor is the 10th percentile of the frame levels, the speech level the 90th.
   When they are at least :data:`CONTRAST_DB` apart, a frame is speech when its level is above
   their midpoint (in dB); otherwise the sample has no quiet part (one speaker talking
   throughout, or one noise throughout) and every frame above :data:`SILENCE_DBFS` counts.
   Pauses shorter than :data:`BRIDGE_S` between speech are speech (the gaps between words);
   bursts shorter than :data:`MIN_BURST_S` are not (clicks). A sample with less than
   :data:`MIN_SPEECH_S` of speech raises :class:`NoSpeech`.
2. **The best window.** Of all windows of :data:`MAX_CLIP_S` (the whole sample when shorter),
   the one holding the most speech frames, the earliest on a tie; it is then trimmed to start
   at its first speech frame and end after its last. A clip shorter than :data:`MIN_CLIP_S` is
   extended with the audio after it, then before it, to that length (or to the whole sample).
3. **Loudness.** The clip is scaled so that the RMS of its speech frames is
   :data:`TARGET_DBFS` — an RMS target, not LUFS (no K-weighting: for one speaker's voice the
   two differ by a few dB at most) — then scaled down again if a peak would pass
   :data:`PEAK_DBFS`, so a very peaky clip ends a little under the target instead of clipping.

The voice row records no more than before: the clip's key is a function of the voice id
(:func:`reference_key`) and its length is in the WAV header.
"""

from __future__ import annotations

import io
import itertools
import wave
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Samples = npt.NDArray[np.float32]

REFERENCE_RATE = 24_000
"""Sample rate of the stored clip: VibeVoice's own rate; VoxCPM2 resamples what it reads."""
FRAME_S = 0.02
CONTRAST_DB = 6.0
SILENCE_DBFS = -60.0
BRIDGE_S = 0.3
MIN_BURST_S = 0.1
MIN_SPEECH_S = 1.0
MIN_CLIP_S, MAX_CLIP_S = 5.0, 10.0
TARGET_DBFS = -20.0
PEAK_DBFS = -1.0


class NoSpeech(ValueError):
    """The sample holds too little sound above its noise floor to clone a voice from."""


@dataclass(frozen=True)
class ReferenceClip:
    samples: Samples
    """Mono float32 in -1..1."""
    sample_rate: int
    start_s: float
    """Where in the sample the clip begins."""
    gain_db: float
    """The gain applied to reach the loudness target."""

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sample_rate


def reference_key(voice_id: str) -> str:
    """Storage key of a voice's cleaned reference clip (beside ``sample.<ext>``)."""
    return f"voices/{voice_id}/reference.wav"


def clean_reference(samples: npt.NDArray[np.floating], rate: int) -> ReferenceClip:
    """The cleaned reference clip of ``samples`` (``[S]`` or ``[channels, S]``) at ``rate``,
    by the rule in the module docstring. Raises :class:`NoSpeech`."""
    mono = _mono(samples)
    hop = max(1, round(FRAME_S * rate))
    speech = speech_frames(mono, rate)
    if speech.sum() * FRAME_S < MIN_SPEECH_S:
        raise NoSpeech(
            f"the sample holds less than {MIN_SPEECH_S:g} s of sound above its noise floor"
        )
    first, last = _best_window(speech)
    first, last = _extend(first, last, len(speech))
    clip = mono[first * hop : last * hop]
    voiced = np.repeat(speech[first:last], hop)[: len(clip)]
    gain_db = TARGET_DBFS - _dbfs(clip[voiced] if voiced.any() else clip)
    gain = 10 ** (gain_db / 20)
    peak = float(np.max(np.abs(clip))) * gain
    limit = 10 ** (PEAK_DBFS / 20)
    if peak > limit:
        gain *= limit / peak
        gain_db = 20 * float(np.log10(gain))
    return ReferenceClip(
        samples=(clip * gain).astype(np.float32),
        sample_rate=rate,
        start_s=first * hop / rate,
        gain_db=gain_db,
    )


def speech_frames(samples: Samples, rate: int) -> npt.NDArray[np.bool_]:
    """Per 20 ms frame of mono ``samples``: whether it is speech (step 1 of the rule)."""
    hop = max(1, round(FRAME_S * rate))
    count = len(samples) // hop
    if not count:
        return np.zeros(0, dtype=bool)
    frames = samples[: count * hop].astype(np.float64).reshape(count, hop)
    levels = 20 * np.log10(np.sqrt(np.mean(frames**2, axis=1)) + 1e-10)
    floor, loud = np.percentile(levels, [10, 90])
    threshold = SILENCE_DBFS
    if loud - floor >= CONTRAST_DB:
        threshold = max(SILENCE_DBFS, (floor + loud) / 2)
    mask = levels > threshold
    mask = _fill_runs(mask, value=False, shorter_than=round(BRIDGE_S / FRAME_S), inner=True)
    return _fill_runs(mask, value=True, shorter_than=round(MIN_BURST_S / FRAME_S), inner=False)


def encode_wav(samples: Samples, rate: int) -> bytes:
    """Mono 16-bit PCM WAV of ``samples`` (-1..1)."""
    pcm = np.clip(np.round(samples * 32767), -32768, 32767).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm.tobytes())
    return buffer.getvalue()


def decode_wav(data: bytes) -> tuple[Samples, int]:
    """``(samples, rate)`` of a 16-bit PCM WAV written by :func:`encode_wav` (mono float32)."""
    with wave.open(io.BytesIO(data), "rb") as stored:
        if stored.getsampwidth() != 2:
            raise ValueError("reference clips are 16-bit PCM WAV")
        channels, rate = stored.getnchannels(), stored.getframerate()
        pcm = np.frombuffer(stored.readframes(stored.getnframes()), dtype="<i2")
    samples = pcm.reshape(-1, channels).mean(axis=1) / 32768.0
    return samples.astype(np.float32), rate


def _mono(samples: npt.NDArray[np.floating]) -> Samples:
    if samples.ndim == 2:
        mono: Samples = samples.astype(np.float32).mean(axis=0)
        return mono
    if samples.ndim != 1:
        raise ValueError(f"samples must be [S] or [channels, S], got shape {samples.shape}")
    return samples.astype(np.float32)


def _dbfs(samples: Samples) -> float:
    return 20 * float(np.log10(np.sqrt(np.mean(samples.astype(np.float64) ** 2)) + 1e-10))


def _fill_runs(
    mask: npt.NDArray[np.bool_], *, value: bool, shorter_than: int, inner: bool
) -> npt.NDArray[np.bool_]:
    """Flip runs of ``value`` shorter than ``shorter_than`` frames; with ``inner`` only runs
    with other frames on both sides (a pause before the first word is no gap)."""
    out = mask.copy()
    edges = np.flatnonzero(np.diff(np.concatenate(([-1], mask.astype(int), [-1]))))
    for start, end in itertools.pairwise(edges):
        if mask[start] != value or end - start >= shorter_than:
            continue
        if inner and (start == 0 or end == len(mask)):
            continue
        out[start:end] = not value
    return out


def _best_window(speech: npt.NDArray[np.bool_]) -> tuple[int, int]:
    """``[first, last)`` frames: the window of MAX_CLIP_S with the most speech, trimmed to it."""
    width = min(len(speech), round(MAX_CLIP_S / FRAME_S))
    counts = np.convolve(speech.astype(int), np.ones(width, dtype=int), mode="valid")
    start = int(np.argmax(counts))
    voiced = np.flatnonzero(speech[start : start + width])
    return start + int(voiced[0]), start + int(voiced[-1]) + 1


def _extend(first: int, last: int, total: int) -> tuple[int, int]:
    need = round(MIN_CLIP_S / FRAME_S) - (last - first)
    if need <= 0:
        return first, last
    after = min(need, total - last)
    before = min(need - after, first)
    return first - before, last + after
