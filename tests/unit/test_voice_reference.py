"""The cleaned reference clip: mono, loudness-normalised, the best 5-10 s of speech."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from kinema.voices import reference
from kinema.voices.reference import NoSpeech, clean_reference, decode_wav, encode_wav

pytestmark = pytest.mark.unit
RATE = 24_000
Wave = npt.NDArray[np.float32]


def tone(seconds: float, amplitude: float, hz: float = 220.0) -> Wave:
    t = np.arange(round(seconds * RATE)) / RATE
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def noise(seconds: float, amplitude: float = 0.001, seed: int = 0) -> Wave:
    rng = np.random.default_rng(seed)
    return (amplitude * rng.standard_normal(round(seconds * RATE))).astype(np.float32)


def dbfs(samples: Wave) -> float:
    return 20 * float(np.log10(np.sqrt(np.mean(samples.astype(np.float64) ** 2))))


def test_tone_between_noise_gives_a_mono_normalised_clip_starting_at_the_speech() -> None:
    speech = tone(7.0, 0.3) + noise(7.0, seed=1)
    mono = np.concatenate([noise(2.0), speech, noise(3.0, seed=2)])
    stereo = np.stack([mono, mono * 0.5])  # channels are averaged

    clip = clean_reference(stereo, RATE)

    assert clip.samples.ndim == 1 and clip.samples.dtype == np.float32
    assert clip.sample_rate == RATE
    assert 5.0 <= clip.duration_s <= 10.0
    assert clip.start_s == pytest.approx(2.0, abs=0.02)
    assert clip.duration_s == pytest.approx(7.0, abs=0.04)
    assert dbfs(clip.samples) == pytest.approx(reference.TARGET_DBFS, abs=0.5)


def test_a_quiet_clip_is_raised_to_the_target() -> None:
    quiet = tone(8.0, 0.003)  # about -53 dBFS
    clip = clean_reference(quiet, RATE)
    assert clip.gain_db > 30
    assert dbfs(clip.samples) == pytest.approx(reference.TARGET_DBFS, abs=0.5)


def test_a_30_s_clip_is_trimmed_to_10_s() -> None:
    clip = clean_reference(tone(30.0, 0.2), RATE)
    assert clip.duration_s == pytest.approx(reference.MAX_CLIP_S)
    assert clip.start_s == 0.0


def test_the_window_with_the_most_speech_wins() -> None:
    sample = np.concatenate([tone(3.0, 0.3), noise(4.0), tone(9.0, 0.3), noise(2.0)])
    clip = clean_reference(sample, RATE)
    assert clip.start_s == pytest.approx(7.0, abs=0.02)
    assert clip.duration_s == pytest.approx(9.0, abs=0.04)


def test_pauses_between_words_stay_in_the_clip() -> None:
    words = [part for _ in range(12) for part in (tone(0.4, 0.3), noise(0.2))]
    sample = np.concatenate([noise(1.0), *words, noise(3.0)])
    speech = reference.speech_frames(sample, RATE)
    first = np.flatnonzero(speech)[0]
    last = np.flatnonzero(speech)[-1]
    assert speech[first : last + 1].all()  # the 0.2 s gaps are bridged
    clip = clean_reference(sample, RATE)
    assert clip.start_s == pytest.approx(1.0, abs=0.02)
    assert clip.duration_s == pytest.approx(12 * 0.6 - 0.2, abs=0.04)


def test_short_speech_is_extended_to_5_s_and_clicks_are_not_speech() -> None:
    click = np.zeros(round(0.04 * RATE), dtype=np.float32)
    click[::10] = 0.9
    sample = np.concatenate([noise(2.0), click, noise(1.0), tone(3.0, 0.3), noise(6.0)])
    clip = clean_reference(sample, RATE)
    assert clip.start_s == pytest.approx(3.04, abs=0.02)  # the click is skipped
    assert clip.duration_s == pytest.approx(reference.MIN_CLIP_S, abs=0.02)


def test_peaks_are_held_under_the_limit() -> None:
    sample = tone(6.0, 0.01)
    sample[RATE] = 0.9  # one spike, 39 dB over the tone
    clip = clean_reference(sample, RATE)
    assert float(np.max(np.abs(clip.samples))) <= 10 ** (reference.PEAK_DBFS / 20) + 1e-6
    assert dbfs(clip.samples) < reference.TARGET_DBFS


@pytest.mark.parametrize("sample", [np.zeros(RATE * 6, np.float32), tone(0.5, 0.3)])
def test_silence_or_too_little_sound_is_refused(sample: Wave) -> None:
    padded = np.concatenate([sample, np.zeros(RATE * 5, np.float32)])
    with pytest.raises(NoSpeech, match="less than 1 s"):
        clean_reference(padded, RATE)


def test_wav_round_trip() -> None:
    clip = clean_reference(tone(6.0, 0.2), RATE)
    samples, rate = decode_wav(encode_wav(clip.samples, clip.sample_rate))
    assert rate == RATE and samples.shape == clip.samples.shape
    assert np.max(np.abs(samples - clip.samples)) < 1e-4


def test_the_clip_lives_beside_the_sample() -> None:
    assert reference.reference_key("voice_ab") == "voices/voice_ab/reference.wav"
