"""encode_mp4 then probe_mp4: size, rate, exact frame count, durations, codecs, audio."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import numpy.typing as npt
import pytest

from kinema.media.video import AUDIO_RATE, encode_mp4, probe_mp4

pytestmark = pytest.mark.unit

FPS = 24


def _frames(count: int, height: int = 96, width: int = 160) -> npt.NDArray[np.uint8]:
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    frames = np.empty((count, height, width, 3), dtype=np.uint8)
    for t in range(count):
        frames[t, ..., 0] = (x + 4 * t) % 256
        frames[t, ..., 1] = y
        frames[t, ..., 2] = 128
    return frames


def _tone(seconds: float, rate: int, hz: float, channels: int = 1) -> npt.NDArray[np.float32]:
    t = np.arange(round(seconds * rate)) / rate
    wave = (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)
    return np.repeat(wave[None, :], channels, axis=0)


def _decoded_audio(path: Path) -> npt.NDArray[np.float32]:
    with av.open(str(path)) as container:
        chunks = [f.to_ndarray() for f in container.decode(audio=0)]
    return np.concatenate(chunks, axis=1).astype(np.float32)


def test_video_without_audio(tmp_path: Path) -> None:
    path = tmp_path / "silent.mp4"
    encode_mp4(path, _frames(48), FPS, None, 0)
    info = probe_mp4(path)
    assert (info["width"], info["height"]) == (160, 96)
    assert info["fps"] == FPS
    assert info["frames"] == 48
    assert info["duration"] == pytest.approx(2.0, abs=1e-3)
    assert info["video_codec"] == "h264"
    assert info["has_audio"] is False
    assert info["audio_codec"] is None
    assert info["audio_duration"] is None


@pytest.mark.parametrize(("rate", "channels"), [(48_000, 2), (44_100, 1), (16_000, 1)])
def test_video_with_audio_at_any_input_rate(tmp_path: Path, rate: int, channels: int) -> None:
    path = tmp_path / "sound.mp4"
    encode_mp4(path, _frames(60), FPS, _tone(2.5, rate, 440.0, channels), rate)
    info = probe_mp4(path)
    assert info["frames"] == 60
    assert info["duration"] == pytest.approx(2.5, abs=1e-3)
    assert info["has_audio"] is True
    assert info["audio_codec"] == "aac"
    assert info["audio_sample_rate"] == AUDIO_RATE
    assert info["audio_channels"] == 2
    assert info["audio_duration"] == pytest.approx(2.5, abs=0.03)


def test_resampled_tone_keeps_its_pitch(tmp_path: Path) -> None:
    path = tmp_path / "tone.mp4"
    encode_mp4(path, _frames(48), FPS, _tone(2.0, 16_000, 440.0), 16_000)
    audio = _decoded_audio(path)
    assert audio.shape[0] == 2
    middle = audio[0, AUDIO_RATE // 2 : AUDIO_RATE // 2 + AUDIO_RATE // 2]
    spectrum = np.abs(np.fft.rfft(middle))
    peak_hz = np.argmax(spectrum) * AUDIO_RATE / len(middle)
    assert peak_hz == pytest.approx(440.0, abs=4)
    assert 0.3 < np.abs(middle).max() < 0.7


def test_first_and_last_frames_survive_encoding(tmp_path: Path) -> None:
    frames = _frames(30)
    frames[0] = (255, 0, 0)
    frames[-1] = (0, 0, 255)
    path = tmp_path / "ends.mp4"
    encode_mp4(path, frames, FPS, None, 0)
    with av.open(str(path)) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == 30
    assert np.abs(decoded[0].astype(int) - (255, 0, 0)).mean() < 8
    assert np.abs(decoded[-1].astype(int) - (0, 0, 255)).mean() < 8


def test_moov_atom_comes_first_for_streaming(tmp_path: Path) -> None:
    path = tmp_path / "fast.mp4"
    encode_mp4(path, _frames(24), FPS, _tone(1.0, 48_000, 220.0, 2), 48_000)
    data = path.read_bytes()
    assert 0 < data.find(b"moov") < data.find(b"mdat")


def test_no_partial_file_is_left_on_failure(tmp_path: Path) -> None:
    path = tmp_path / "broken.mp4"
    with pytest.raises(av.error.FFmpegError, match="no-such-preset"):
        encode_mp4(path, _frames(4), FPS, None, 0, preset="no-such-preset")
    assert list(tmp_path.iterdir()) == []


def test_check_is_called_before_each_frame_and_can_stop_the_encoding(tmp_path: Path) -> None:
    calls: list[int] = []

    def check() -> None:
        calls.append(1)
        if len(calls) == 5:
            raise InterruptedError("cancelled")

    path = tmp_path / "stopped.mp4"
    with pytest.raises(InterruptedError, match="cancelled"):
        encode_mp4(path, _frames(24), FPS, _tone(1.0, AUDIO_RATE, 440.0), AUDIO_RATE, check=check)
    assert len(calls) == 5
    assert list(tmp_path.iterdir()) == []  # no partial file either
    calls.clear()
    encode_mp4(path, _frames(24), FPS, None, 0, check=lambda: calls.append(1))
    assert len(calls) == 24 and probe_mp4(path)["frames"] == 24


@pytest.mark.parametrize(
    ("frames", "message"),
    [
        (np.zeros((0, 16, 16, 3), np.uint8), "T > 0"),
        (np.zeros((2, 16, 16), np.uint8), r"\[T, H, W, 3\]"),
        (np.zeros((2, 16, 16, 3), np.float32), "uint8"),
        (np.zeros((2, 15, 16, 3), np.uint8), "even dimensions"),
    ],
)
def test_malformed_frames_are_rejected(
    tmp_path: Path, frames: npt.NDArray[np.uint8], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        encode_mp4(tmp_path / "x.mp4", frames, FPS, None, 0)


def test_malformed_audio_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="1 or 2"):
        encode_mp4(tmp_path / "x.mp4", _frames(2), FPS, np.zeros((6, 100), np.float32), 48_000)
    with pytest.raises(ValueError, match="sample_rate"):
        encode_mp4(tmp_path / "x.mp4", _frames(2), FPS, np.zeros((2, 100), np.float32), 0)
