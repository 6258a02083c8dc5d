"""The timeline rule: lead-in, order, gaps, padding, stretch within limits, refusal beyond,
exact length, resampling."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from kinema.errors import InvalidRequest
from kinema.voices import timeline
from kinema.voices.script import Line
from kinema.voices.timeline import (
    DoesNotFit,
    SpokenLine,
    check_fits,
    estimate_seconds,
    place_lines,
    plan,
    time_stretch,
)

pytestmark = pytest.mark.unit
TTS_RATE, VIDEO_RATE = 48_000, 16_000
Wave = npt.NDArray[np.float32]


def tone(seconds: float, hz: float, rate: int = TTS_RATE, amplitude: float = 0.5) -> Wave:
    t = np.arange(round(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def spoken(seconds: float, hz: float, speaker: int | None = 1) -> SpokenLine:
    return SpokenLine(Line(f"{hz:g} Hz", speaker, "en"), tone(seconds, hz), TTS_RATE)


def peak_hz(samples: Wave, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.argmax(spectrum)) * rate / len(samples)


def test_lines_in_order_after_the_lead_in_with_gaps_padded_with_silence() -> None:
    track = place_lines([spoken(1.0, 300), spoken(1.5, 600, speaker=2)], 5.0, VIDEO_RATE)
    first, second = track.lines
    assert first.start_s == pytest.approx(timeline.LEAD_IN_S)
    assert first.end_s == pytest.approx(timeline.LEAD_IN_S + 1.0)
    assert second.start_s == pytest.approx(first.end_s + timeline.GAP_S)
    assert second.end_s == pytest.approx(second.start_s + 1.5)
    assert (first.speaker, second.speaker) == (1, 2)
    assert first.pace == second.pace == 1.0
    audio = track.audio

    def at(start_s: float, end_s: float) -> Wave:
        return audio[round(start_s * VIDEO_RATE) : round(end_s * VIDEO_RATE)]

    assert not at(0, first.start_s).any()  # the lead-in is silent
    assert not at(first.end_s + 0.001, second.start_s - 0.001).any()  # the gap too
    assert not at(second.end_s + 0.001, 5.0).any()  # padded to the shot's end
    assert peak_hz(at(first.start_s, first.end_s), VIDEO_RATE) == pytest.approx(300, abs=2)
    assert peak_hz(at(second.start_s, second.end_s), VIDEO_RATE) == pytest.approx(600, abs=2)
    assert first.info() == {"speaker": 1, "language": "en", "start": 0.3, "end": 1.3}


@pytest.mark.parametrize("shot_s", [3.0, 5.0, 7.3])
def test_the_track_is_exactly_the_shot_long_at_the_output_rate(shot_s: float) -> None:
    track = place_lines([spoken(1.0, 440)], shot_s, VIDEO_RATE)
    assert track.audio.shape == (round(shot_s * VIDEO_RATE),)
    assert track.audio.dtype == np.float32 and track.sample_rate == VIDEO_RATE


def test_resampling_keeps_duration_and_pitch() -> None:
    track = place_lines([spoken(2.0, 1000)], 4.0, 24_000)
    line = track.lines[0]
    assert line.end_s - line.start_s == pytest.approx(2.0, abs=1e-3)
    part = track.audio[round(line.start_s * 24_000) : round(line.end_s * 24_000)]
    assert peak_hz(part, 24_000) == pytest.approx(1000, abs=2)


def test_no_lines_give_a_silent_track() -> None:
    track = place_lines([], 3.0, VIDEO_RATE)
    assert track.lines == () and not track.audio.any() and len(track.audio) == 3 * VIDEO_RATE


def test_too_long_speech_is_stretched_to_fit_with_the_pitch_kept() -> None:
    # room = 4.0 - 0.3 - 0.2 - 0.25 = 3.25 s for 3.6 s of speech: 0.903 of its length.
    track = place_lines([spoken(1.8, 440), spoken(1.8, 880)], 4.0, VIDEO_RATE)
    first, second = track.lines
    scale = 3.25 / 3.6
    assert first.pace == second.pace == pytest.approx(1 / scale)
    assert first.end_s - first.start_s == pytest.approx(1.8 * scale, abs=1e-3)
    assert second.end_s == pytest.approx(4.0 - timeline.TAIL_S, abs=1e-3)
    part = track.audio[round(first.start_s * VIDEO_RATE) : round(first.end_s * VIDEO_RATE)]
    assert peak_hz(part, VIDEO_RATE) == pytest.approx(440, abs=3)  # resampling would say 487


def test_time_stretch_keeps_pitch_and_level_at_the_limit() -> None:
    wave = tone(2.0, 440, rate=24_000)
    fast = time_stretch(wave, 24_000, timeline.MIN_SCALE)
    assert len(fast) == round(len(wave) * timeline.MIN_SCALE)
    assert peak_hz(fast, 24_000) == pytest.approx(440, abs=2)
    middle = fast[2400:-2400]
    assert np.sqrt(np.mean(middle**2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.03)


def test_speech_beyond_25_percent_faster_is_refused_with_the_reason() -> None:
    # room 3.25 s; 4.1 s of speech would need 0.79 of its length.
    with pytest.raises(DoesNotFit, match=r"2 line\(s\) last 4\.1 s; even 25% faster"):
        place_lines([spoken(2.05, 440), spoken(2.05, 880)], 4.0, VIDEO_RATE)
    assert plan([2.0, 2.0], 4.0).scale == pytest.approx(3.25 / 4.0)  # 0.8125: within limits
    with pytest.raises(DoesNotFit, match=r"the shot lasts 0\.4 s"):
        plan([0.1], 0.4)


def test_estimates_from_text_per_language() -> None:
    assert estimate_seconds(Line("one two three four five", 1, "en")) == pytest.approx(2.0)
    assert estimate_seconds(Line("你好今天天气很好", 1, "zh")) == pytest.approx(2.0)
    assert estimate_seconds(Line("OK 你好", 1, "zh")) == pytest.approx(0.4 + 0.5)
    assert estimate_seconds(Line("Hi", 1, "en")) == timeline.MIN_LINE_S


def test_check_fits_at_submit_is_a_400_naming_the_shot() -> None:
    short = [Line("a few words here", 1, "en")]
    check_fits(short, 3.0, field="multi_prompt[0].prompt")
    long = [Line(" ".join(["word"] * 30), 1, "en")]  # 12 s of speech
    with pytest.raises(InvalidRequest) as raised:
        check_fits(long, 5.0, field="multi_prompt[0].prompt")
    message = raised.value.message
    assert message.startswith("multi_prompt[0].prompt: the dialogue does not fit the shot")
    assert "12.0 s" in message and "estimated" in message


def test_max_speech_bounds_what_the_engine_may_say() -> None:
    assert timeline.max_speech_s(5.0, 2) == pytest.approx((5.0 - 0.75) / timeline.MIN_SCALE)
    assert timeline.max_speech_s(0.2, 1) == 0.0
