"""Progress by phase: each phase spends its share, shots weigh by their frames, 1 only when
stored, never backwards."""

from __future__ import annotations

import pytest

from kinema.engines.base import PhaseShares
from kinema.runners.meter import Meter
from kinema.runners.protocol import Phase

pytestmark = pytest.mark.unit

SHARES = PhaseShares(loading=0.1, denoising=0.5, decoding=0.2, encoding=0.1, storing=0.1)


class Heard:
    def __init__(self) -> None:
        self.phases: list[Phase] = []
        self.reports: list[tuple[float, float | None]] = []

    def report(self, value: float, within: float | None) -> None:
        self.reports.append((round(value, 6), None if within is None else round(within, 6)))

    @property
    def last(self) -> tuple[float, float | None]:
        return self.reports[-1]


def test_one_shot_spends_each_share_in_turn() -> None:
    heard = Heard()
    meter = Meter(SHARES, heard.report, heard.phases.append, [120])
    meter.begin("loading")
    meter.at(1.0)
    assert heard.last == (0.1, 1.0)
    meter.begin("denoising")
    assert heard.last == (0.1, 0.0)
    meter.at(0.5)
    assert heard.last == (0.35, 0.5)
    meter.begin("decoding")
    meter.at(0.5)
    assert heard.last == (0.7, 0.5)
    meter.at(1.0)
    meter.begin("encoding")
    assert heard.last == (0.8, 0.0)
    meter.begin("storing")
    assert heard.last == (0.9, 0.0)
    meter.done()
    assert heard.last == (1.0, 1.0)
    assert heard.phases == ["loading", "denoising", "decoding", "encoding", "storing"]
    assert max(value for value, _ in heard.reports[:-1]) < 1.0  # 1 only once stored


def test_shots_weigh_by_their_frames() -> None:
    heard = Heard()
    meter = Meter(SHARES, heard.report, heard.phases.append, [24, 72])  # 1 s + 3 s
    meter.begin("loading")
    meter.begin("denoising", 0)
    meter.at(1.0)
    assert heard.last == (pytest.approx(0.1 + 0.5 * 0.25), 0.25)
    meter.begin("decoding", 0)
    meter.at(1.0)
    assert heard.last == (pytest.approx(0.1 + 0.7 * 0.25), 0.25)
    meter.begin("denoising", 1)
    assert heard.last == (pytest.approx(0.275), 0.25)  # the denoising phase resumes at a quarter
    meter.at(1.0)
    meter.begin("decoding", 1)
    meter.at(1.0)
    assert heard.last == (pytest.approx(0.8), 1.0)


def test_progress_never_goes_backwards() -> None:
    heard = Heard()
    meter = Meter(SHARES, heard.report, heard.phases.append, [24])
    meter.begin("denoising")
    meter.at(0.8)
    meter.at(0.2)  # an engine whose second stage restarts its own count
    values = [value for value, _ in heard.reports]
    assert values == sorted(values)


def test_check_repeats_the_last_report_and_lets_it_stop_the_run() -> None:
    class Stop(Exception):
        pass

    heard = Heard()
    stop = [False]

    def report(value: float, within: float | None) -> None:
        heard.report(value, within)
        if stop[0]:
            raise Stop

    meter = Meter(SHARES, report, heard.phases.append, [24])
    meter.begin("decoding")
    meter.at(0.5)
    meter.check()
    assert heard.reports[-1] == heard.reports[-2]
    stop[0] = True
    with pytest.raises(Stop):
        meter.check()


def test_shares_must_add_up() -> None:
    with pytest.raises(ValueError, match="sum to 1"):
        PhaseShares(loading=0.5, denoising=0.5, decoding=0.5, encoding=0, storing=0)
    with pytest.raises(ValueError, match="shots need frames"):
        Meter(SHARES, Heard().report, lambda _p: None, [])
    with pytest.raises(RuntimeError, match="no phase"):
        Meter(SHARES, Heard().report, lambda _p: None).at(0.5)
