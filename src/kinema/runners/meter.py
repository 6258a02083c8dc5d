"""A run's progress by phase: each phase spends only its measured share of the bar.

The worker announces each phase (``loading`` → per shot ``denoising``, ``decoding`` →
``encoding`` → ``storing``) and reports how far into it the run is; the meter turns that into
the overall progress (0..1) with the preset's :class:`~kinema.engines.base.PhaseShares`, and
into the phase's own progress. Overall progress reaches 1 only when the output is stored.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from kinema.engines.base import PhaseShares
from kinema.runners.protocol import Phase

Report = Callable[[float, float | None], None]
"""Hears ``(progress, phase_progress)``; may raise to stop the run (a cancel)."""


class Meter:
    """Progress of one run. ``shot_frames``: each shot's frame count (one entry for an image),
    which weighs the shots' denoising and decoding."""

    def __init__(
        self,
        shares: PhaseShares,
        report: Report,
        announce: Callable[[Phase], None],
        shot_frames: Sequence[int] = (1,),
    ) -> None:
        total = sum(shot_frames)
        if not shot_frames or min(shot_frames) <= 0:
            raise ValueError(f"shots need frames, got {list(shot_frames)}")
        self._shares = shares
        self._report = report
        self._announce = announce
        self._weights = [frames / total for frames in shot_frames]
        self._phase: Phase | None = None
        self._shot = 0
        self._within: float | None = None
        self.value = 0.0

    def begin(self, phase: Phase, shot: int = 0) -> None:
        """The run enters ``phase`` (of shot ``shot`` for denoising and decoding)."""
        self._phase, self._shot = phase, shot
        self._announce(phase)
        self.at(0.0)

    def at(self, fraction: float) -> None:
        """The run is ``fraction`` (0..1) into its phase (of the current shot)."""
        if self._phase is None:
            raise RuntimeError("no phase has begun")
        fraction = min(max(fraction, 0.0), 1.0)
        overall, within = self._where(self._phase, fraction)
        self.value = max(self.value, overall)  # never backwards, even between shots
        self._within = within
        self._report(self.value, within)

    def check(self) -> None:
        """Report where the run is again (the report raises when the run is to stop)."""
        self._report(self.value, self._within)

    def done(self) -> None:
        """The output is stored: progress 1."""
        self.value = 1.0
        self._report(1.0, 1.0)

    def _where(self, phase: Phase, fraction: float) -> tuple[float, float]:
        s = self._shares
        if phase == "loading":
            return s.loading * fraction, fraction
        before = sum(self._weights[: self._shot])
        weight = self._weights[self._shot]
        if phase in ("denoising", "decoding"):
            within = before + weight * fraction
            base = s.loading + (s.denoising + s.decoding) * before
            if phase == "denoising":
                return base + s.denoising * weight * fraction, within
            return base + (s.denoising + s.decoding * fraction) * weight, within
        start = s.loading + s.denoising + s.decoding
        if phase == "encoding":
            return start + s.encoding * fraction, fraction
        return start + s.encoding + s.storing * fraction, fraction
