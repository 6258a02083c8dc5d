"""A shot's speech track: each spoken line placed on the shot's timeline and mixed to its length.

numpy and PyAV (for resampling), no torch: the API checks a plan at submit from the text alone
(:func:`check_fits`), the worker lays out the real waveforms (:func:`place_lines`).

The rule for a shot of ``shot_s`` seconds with lines in script order:

- The first line starts after :data:`LEAD_IN_S`; each next one :data:`GAP_S` after the one
  before ends; :data:`TAIL_S` is kept free at the end. The room for speech is
  ``shot_s - LEAD_IN_S - TAIL_S - GAP_S × (lines - 1)``.
- Speech that fits the room plays at its own pace and the rest of the shot is silence.
- Speech longer than the room is time-stretched, every line by the same factor, to fill it
  exactly — down to :data:`MIN_SCALE` of its length (at most 25% faster), by WSOLA
  (:func:`time_stretch`): frames of the waveform overlap-added at a new hop, each shifted to
  the offset that best continues the last, so the pitch is kept.
- Speech that would need more than that does not fit: :class:`DoesNotFit`, with the reason.
- Each waveform is resampled from its engine's rate to ``out_rate`` (the video model's audio
  rate) before it is placed; the track is mono, exactly ``round(shot_s × out_rate)`` samples.

At submit there are no waveforms yet, so :func:`estimate_seconds` takes a line's length from
its text at typical speaking rates — :data:`WORDS_PER_S` English words (or other
space-separated words), :data:`IDEOGRAPHS_PER_S` Chinese characters, at least
:data:`MIN_LINE_S` a line — and :func:`check_fits` applies the same rule to those lengths: a
plan refused there is a 400 before any synthesis. A plan that passes can still not fit with
the real waveforms (a slow voice); :func:`place_lines` then raises :class:`DoesNotFit`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from kinema.errors import InvalidRequest
from kinema.media.audio import resample
from kinema.voices.script import Language, Line

Samples = npt.NDArray[np.float32]

LEAD_IN_S = 0.3
GAP_S = 0.25
TAIL_S = 0.2
MIN_SCALE = 0.8
"""Shortest a line may be made, as a fraction of its length: 1 / 0.8 = 1.25× its pace."""
WORDS_PER_S = 2.5
"""150 words a minute: an unhurried English speaking rate."""
IDEOGRAPHS_PER_S = 4.0
"""Chinese characters (syllables) a second: an unhurried Mandarin rate."""
MIN_LINE_S = 0.5
_FRAME_S = 0.03
_IDEOGRAPH = re.compile(
    "[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ebef\U00030000-\U0003134f]"
)


class DoesNotFit(ValueError):
    """The lines cannot be placed in the shot, even at the fastest pace allowed."""


@dataclass(frozen=True)
class SpokenLine:
    line: Line
    waveform: Samples
    """Mono float32 in -1..1 at ``sample_rate``, as the speech engine made it."""
    sample_rate: int


@dataclass(frozen=True)
class PlacedLine:
    text: str
    speaker: int | None
    language: Language
    start_s: float
    end_s: float
    pace: float
    """1.0: as spoken; up to 1 / MIN_SCALE when time-stretched to fit."""

    def info(self) -> dict[str, object]:
        """For ``x-output-metadata``."""
        return {
            "speaker": self.speaker,
            "language": self.language,
            "start": round(self.start_s, 3),
            "end": round(self.end_s, 3),
        }


@dataclass(frozen=True)
class ShotTrack:
    audio: Samples
    """Mono float32, exactly ``round(shot_s × sample_rate)`` samples."""
    sample_rate: int
    lines: tuple[PlacedLine, ...]


@dataclass(frozen=True)
class Layout:
    starts: tuple[float, ...]
    """Start of each line, seconds into the shot."""
    scale: float
    """Every line's length is multiplied by this (1.0, or down to MIN_SCALE)."""


def plan(durations: Sequence[float], shot_s: float) -> Layout:
    """Where lines lasting ``durations`` seconds go in a shot of ``shot_s`` (the rule above).
    Raises :class:`DoesNotFit` with the reason."""
    if not durations:
        return Layout((), 1.0)
    fixed = LEAD_IN_S + TAIL_S + GAP_S * (len(durations) - 1)
    speech = sum(durations)
    room = shot_s - fixed
    if speech * MIN_SCALE > room:
        raise DoesNotFit(
            f"{len(durations)} line(s) last {speech:.1f} s; even 25% faster they need "
            f"{speech * MIN_SCALE + fixed:.1f} s with the {LEAD_IN_S:g} s lead-in, "
            f"{GAP_S:g} s gaps and {TAIL_S:g} s tail, but the shot lasts {shot_s:g} s"
        )
    scale = min(1.0, room / speech) if speech > 0 else 1.0
    starts, t = [], LEAD_IN_S
    for duration in durations:
        starts.append(t)
        t += duration * scale + GAP_S
    return Layout(tuple(starts), scale)


def max_speech_s(shot_s: float, lines: int) -> float:
    """The most speech (at its own pace) ``lines`` lines may hold in total in the shot: a bound
    for the speech engine's ``max_seconds``."""
    room = shot_s - LEAD_IN_S - TAIL_S - GAP_S * max(0, lines - 1)
    return max(0.0, room / MIN_SCALE)


def estimate_seconds(line: Line) -> float:
    """How long ``line`` takes to say, from its text alone (rates in the module docstring)."""
    ideographs = len(_IDEOGRAPH.findall(line.text))
    words = len(_IDEOGRAPH.sub(" ", line.text).split())
    return max(MIN_LINE_S, ideographs / IDEOGRAPHS_PER_S + words / WORDS_PER_S)


def check_fits(lines: Sequence[Line], shot_s: float, *, field: str) -> None:
    """InvalidRequest (400) naming ``field`` when the lines' estimated lengths do not fit."""
    try:
        plan([estimate_seconds(line) for line in lines], shot_s)
    except DoesNotFit as exc:
        raise InvalidRequest(
            f"{field}: the dialogue does not fit the shot: {exc} (lengths estimated from the "
            "text); shorten the lines or lengthen the shot"
        ) from exc


def place_lines(spoken: Sequence[SpokenLine], shot_s: float, out_rate: int) -> ShotTrack:
    """The shot's speech track at ``out_rate`` with each line placed by the rule above.
    Raises :class:`DoesNotFit`."""
    waves = [resample(s.waveform, s.sample_rate, out_rate) for s in spoken]
    layout = plan([len(w) / out_rate for w in waves], shot_s)
    track = np.zeros(round(shot_s * out_rate), dtype=np.float32)
    placed = []
    for item, wave, start_s in zip(spoken, waves, layout.starts, strict=True):
        wave = time_stretch(wave, out_rate, layout.scale)
        start = round(start_s * out_rate)
        part = wave[: max(0, len(track) - start)]
        track[start : start + len(part)] += part
        placed.append(
            PlacedLine(
                text=item.line.text,
                speaker=item.line.speaker,
                language=item.line.language,
                start_s=start / out_rate,
                end_s=(start + len(part)) / out_rate,
                pace=1.0 / layout.scale,
            )
        )
    return ShotTrack(np.clip(track, -1.0, 1.0), out_rate, tuple(placed))


def time_stretch(samples: Samples, rate: int, scale: float) -> Samples:
    """Mono ``samples`` made ``scale`` times as long (``round(len × scale)`` samples) with the
    pitch kept, by WSOLA: Hann frames of 30 ms overlap-added at half a frame, each taken within
    a quarter frame of its nominal place where it best continues the frame before."""
    length = round(len(samples) * scale)
    if scale == 1.0 or not length:
        return samples[:length].astype(np.float32)
    frame = 2 * max(1, round(_FRAME_S * rate / 2))
    hop = frame // 2
    tolerance = hop // 2
    speed = 1.0 / scale
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(frame) / frame)).astype(np.float32)
    source = np.pad(samples.astype(np.float32), (hop, frame + tolerance + 2 * hop))
    out = np.zeros(length + 2 * frame, dtype=np.float32)
    last = len(source) - frame
    previous = 0
    for k in range(math.ceil((length + hop) / hop) + 1):
        nominal = min(last, max(0, round((k * hop - hop) * speed + hop)))
        position = nominal
        if k:
            follow = source[min(previous + hop, last) :][:frame]
            lo, hi = max(0, nominal - tolerance), min(last, nominal + tolerance)
            scores = np.correlate(source[lo : hi + frame], follow, mode="valid")
            position = lo + int(np.argmax(scores))
        out[k * hop : k * hop + frame] += source[position : position + frame] * window
        previous = position
    return out[hop : hop + length]
