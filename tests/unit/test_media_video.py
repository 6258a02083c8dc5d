"""encode_mp4 then probe_mp4: size, rate, exact frame count, durations, codecs, audio."""

from __future__ import annotations

import logging
import threading
import time
import weakref
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt
import pytest

from kinema.media import streams, video
from kinema.media.encoding import EncoderSettings
from kinema.media.video import AUDIO_RATE, QUEUE_CHUNKS, Mp4Writer, encode_mp4, probe_mp4

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


def test_no_partial_file_is_left_when_the_encoder_does_not_open(tmp_path: Path) -> None:
    path = tmp_path / "broken.mp4"
    # A preset libx264 refuses (EncoderSettings' own check refuses it first in practice).
    bad = EncoderSettings.model_construct(**{**EncoderSettings().model_dump(), "preset": "nope"})
    with pytest.raises(av.error.FFmpegError, match="nope"):
        encode_mp4(path, _frames(4), FPS, None, 0, encoder=bad)
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


# Mp4Writer: the streaming encoder ---------------------------------------------------------------


def _writer(path: Path, audio_rate: int | None = None, **kwargs: Any) -> Mp4Writer:
    return Mp4Writer(path, width=160, height=96, fps=FPS, audio_rate=audio_rate, **kwargs)


def _write_all(writer: Mp4Writer, chunks: list[npt.NDArray[np.uint8]]) -> None:
    with writer:
        for chunk in chunks:
            writer.write_frames(chunk)


def test_chunked_writes_make_the_same_file_as_one_array(tmp_path: Path) -> None:
    frames, audio = _frames(60), _tone(2.5, 16_000, 440.0)
    encode_mp4(tmp_path / "whole.mp4", frames, FPS, audio, 16_000)
    with _writer(tmp_path / "chunks.mp4", 16_000) as writer:
        writer.write_audio(audio)
        for start in range(0, 60, 7):  # chunks that do not divide the clip
            writer.write_frames(frames[start : start + 7])
    assert writer.frames_written == 60
    whole, chunks = probe_mp4(tmp_path / "whole.mp4"), probe_mp4(tmp_path / "chunks.mp4")
    assert chunks == whole
    assert (chunks["frames"], chunks["duration"]) == (60, pytest.approx(2.5, abs=1e-3))
    assert np.array_equal(
        _decoded_audio(tmp_path / "chunks.mp4"), _decoded_audio(tmp_path / "whole.mp4")
    )


def test_audio_appended_before_each_shots_frames_makes_one_exact_track(tmp_path: Path) -> None:
    first, second = _tone(1.0, 44_100, 440.0, 2), _tone(1.5, 44_100, 660.0, 2)
    frames = _frames(60)
    with _writer(tmp_path / "shots.mp4", 44_100) as writer:
        writer.write_audio(first)
        writer.write_frames(frames[:24])
        writer.write_audio(second)
        writer.write_frames(frames[24:])
    encode_mp4(tmp_path / "one.mp4", frames, FPS, np.concatenate([first, second], 1), 44_100)
    info = probe_mp4(tmp_path / "shots.mp4")
    assert info["audio_duration"] == probe_mp4(tmp_path / "one.mp4")["audio_duration"]
    assert info["audio_duration"] == pytest.approx(2.5, abs=0.03)
    shots, one = _decoded_audio(tmp_path / "shots.mp4"), _decoded_audio(tmp_path / "one.mp4")
    assert shots.shape == one.shape and np.abs(shots - one).max() < 1e-4


def test_a_check_that_raises_stops_the_writer_and_leaves_no_file(tmp_path: Path) -> None:
    calls: list[int] = []

    def check() -> None:
        calls.append(1)
        if len(calls) == 10:
            raise InterruptedError("cancelled")

    frames = _frames(48)
    writer = _writer(tmp_path / "stopped.mp4", check=check)
    with pytest.raises(InterruptedError, match="cancelled"):
        _write_all(writer, [frames[start : start + 4] for start in range(0, 48, 4)])
    assert len(calls) == 10 and writer.frames_written == 9
    assert list(tmp_path.iterdir()) == []


def test_an_error_on_the_encoder_thread_reaches_the_caller_and_stops_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(rgb: npt.NDArray[np.uint8], *args: object) -> av.VideoFrame:
        raise OSError("disk full")

    monkeypatch.setattr(video, "_video_frame", broken)
    writer = _writer(tmp_path / "broken.mp4")
    chunks = [_frames(4)] * 50  # more than the queue holds: a write after the failure raises

    def write() -> None:
        for chunk in chunks:
            writer.write_frames(chunk)

    with pytest.raises(OSError, match="disk full"):
        write()
    with pytest.raises(OSError, match="disk full"):
        writer.close()  # close raises it too (the caller may not write again)
    assert "mp4-writer" not in [thread.name for thread in threading.enumerate()]
    assert writer.frames_written == 0
    assert list(tmp_path.iterdir()) == []


def test_a_producer_faster_than_the_encoder_holds_a_bounded_number_of_chunks(
    tmp_path: Path,
) -> None:
    alive: list[weakref.ref[npt.NDArray[np.uint8]]] = []
    most = 0

    def slow() -> None:
        time.sleep(0.002)  # the encoder is the slow side; nothing here asserts on time

    with _writer(tmp_path / "bounded.mp4", check=slow) as writer:
        for _ in range(30):
            chunk = _frames(4)
            alive.append(weakref.ref(chunk))
            most = max(most, sum(ref() is not None for ref in alive))
            writer.write_frames(chunk)
            del chunk
    # The queue's chunks, the one being encoded and the one the caller is handing over; more
    # than the queue's alone, so the producer did wait for the encoder.
    assert QUEUE_CHUNKS < most <= QUEUE_CHUNKS + 2
    assert probe_mp4(tmp_path / "bounded.mp4")["frames"] == 120


def test_abort_and_an_exception_in_the_block_leave_no_file(tmp_path: Path) -> None:
    writer = _writer(tmp_path / "aborted.mp4")
    writer.write_frames(_frames(8))
    writer.abort()
    with pytest.raises(ValueError, match="closed"):
        writer.write_frames(_frames(1))

    def failing_block() -> None:
        with _writer(tmp_path / "raised.mp4") as writer:
            writer.write_frames(_frames(8))
            raise KeyError("the engine failed")

    with pytest.raises(KeyError):
        failing_block()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("chunk", "message"),
    [
        (np.zeros((2, 96, 160), np.uint8), r"uint8 \[t, h, w, 3\].*160x96.*\[2, 96, 160\]"),
        (np.zeros((2, 96, 160, 4), np.uint8), r"\[2, 96, 160, 4\]"),
        (np.zeros((2, 0, 160, 3), np.uint8), r"\[2, 0, 160, 3\]"),
        (np.zeros((2, 96, 160, 3), np.float32), "float32"),
    ],
)
def test_a_chunk_of_another_shape_or_type_is_refused(
    tmp_path: Path, chunk: npt.NDArray[np.uint8], message: str
) -> None:
    with _writer(tmp_path / "x.mp4") as writer:
        with pytest.raises(ValueError, match=message):
            writer.write_frames(chunk)
        writer.write_frames(_frames(2))
    assert probe_mp4(tmp_path / "x.mp4")["frames"] == 2


def test_frames_of_another_size_are_scaled_in_the_yuv_conversion(tmp_path: Path) -> None:
    """The small frames a tiny engine makes reach the writer unscaled; the file is at the
    writer's size, as close to the same frames scaled first as two bicubic scalers get."""
    small = _frames(6, height=24, width=40)
    big = np.stack([_bicubic(frame, 160, 96) for frame in small])
    for name, chunk in (("small.mp4", small), ("big.mp4", big)):
        with _writer(tmp_path / name) as writer:
            writer.write_frames(chunk)
    info = probe_mp4(tmp_path / "small.mp4")
    assert (info["width"], info["height"], info["frames"]) == (160, 96, 6)
    scaled, reference = _decoded(tmp_path / "small.mp4"), _decoded(tmp_path / "big.mp4")
    assert float(np.mean(np.abs(scaled.astype(np.float32) - reference))) < 3.0


def _bicubic(rgb: npt.NDArray[np.uint8], width: int, height: int) -> npt.NDArray[np.uint8]:
    from PIL import Image

    resized = Image.fromarray(rgb).resize((width, height), Image.Resampling.BICUBIC)
    return np.asarray(resized, dtype=np.uint8)


def _decoded(path: Path) -> npt.NDArray[np.uint8]:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def test_audio_needs_an_audio_stream_and_a_writer_bad_geometry(tmp_path: Path) -> None:
    with _writer(tmp_path / "x.mp4") as writer:
        with pytest.raises(ValueError, match="no audio stream"):
            writer.write_audio(_tone(0.1, 16_000, 440.0))
        writer.write_frames(_frames(1))
    with pytest.raises(ValueError, match="even dimensions"):
        Mp4Writer(tmp_path / "y.mp4", width=161, height=96, fps=FPS, audio_rate=None)
    with pytest.raises(ValueError, match="sample_rate"):
        Mp4Writer(tmp_path / "y.mp4", width=160, height=96, fps=FPS, audio_rate=0)


def _is_x264(path: Path) -> bool:
    return b"x264 - core" in path.read_bytes()  # libx264's SEI names it in the stream


@pytest.mark.skipif(Path("/dev/nvidia0").exists(), reason="NVENC may open on this machine")
def test_nvenc_falls_back_to_libx264_without_an_nvidia_gpu(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "nvenc.mp4"
    with caplog.at_level(logging.WARNING, logger="kinema.media.streams"):
        codec = encode_mp4(
            path, _frames(8), FPS, None, 0, encoder=EncoderSettings(codec="h264_nvenc")
        )
    assert codec == "libx264" and _is_x264(path)
    assert probe_mp4(path)["video_codec"] == "h264"
    assert "h264_nvenc cannot be used" in caplog.text
    caplog.clear()
    auto = _writer(tmp_path / "auto.mp4", encoder=EncoderSettings(codec="auto"))
    with caplog.at_level(logging.WARNING, logger="kinema.media.streams"):
        _write_all(auto, [_frames(8)])
    assert auto.codec == "libx264" and _is_x264(tmp_path / "auto.mp4")
    assert caplog.text == ""  # auto falls back silently


def test_an_nvenc_that_does_not_open_falls_back_anywhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unopenable(container: Any, fps: int, encoder: EncoderSettings) -> Any:
        stream = container.add_stream("libx264", rate=fps)
        stream.options = {"preset": "no-such-preset"}  # fails at open, as NVENC without a GPU
        return stream

    monkeypatch.setattr(streams, "_nvenc_stream", unopenable)
    monkeypatch.setattr(streams.av, "codecs_available", {*av.codecs_available, streams.NVENC})
    path = tmp_path / "fallback.mp4"
    assert (
        encode_mp4(path, _frames(8), FPS, None, 0, encoder=EncoderSettings(codec="auto"))
        == "libx264"
    )
    assert _is_x264(path) and probe_mp4(path)["frames"] == 8
    assert [p.name for p in tmp_path.iterdir()] == ["fallback.mp4"]
