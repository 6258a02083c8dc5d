"""conform_frames / conform_video / conform_image: exact size, frame count and audio length,
from frames that arrive in chunks."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from kinema.engines.base import FrameStream, VideoOutput
from kinema.media.conform import (
    conform_audio,
    conform_frames,
    conform_image,
    conform_video,
    crop_box,
    frame_indices,
)

pytestmark = pytest.mark.unit


def _numbered(count: int, height: int, width: int) -> npt.NDArray[np.uint8]:
    """Frames whose every pixel carries the frame's index in the red channel."""
    frames = np.zeros((count, height, width, 3), dtype=np.uint8)
    frames[..., 0] = np.arange(count, dtype=np.uint8)[:, None, None]
    return frames


def _bars(height: int, width: int) -> npt.NDArray[np.uint8]:
    """One frame: red left third, green middle third, blue right third."""
    frame = np.zeros((1, height, width, 3), dtype=np.uint8)
    third = width // 3
    frame[0, :, :third, 0] = 255
    frame[0, :, third : 2 * third, 1] = 255
    frame[0, :, 2 * third :, 2] = 255
    return frame


def _conform(out: VideoOutput, **overrides: object) -> tuple[object, ...]:
    target: dict[str, object] = {
        "width": 64,
        "height": 36,
        "num_frames": 24,
        "fps": 24,
        "generate_audio": True,
    }
    target.update(overrides)
    return conform_video(out, **target)  # type: ignore[arg-type]


def test_crop_only_path_takes_the_centre_rows() -> None:
    source = np.zeros((3, 1088, 1920, 3), dtype=np.uint8)
    source[:, 4:1084] = 200
    out = VideoOutput(frames=FrameStream.of(source), fps=24)
    frames, audio, rate = conform_video(
        out, width=1920, height=1080, num_frames=3, fps=24, generate_audio=False
    )
    assert frames.shape == (3, 1080, 1920, 3)
    assert frames.flags.c_contiguous
    assert (frames == 200).all()
    assert audio is None
    assert rate == 0


def test_upscale_to_exact_size() -> None:
    out = VideoOutput(frames=FrameStream.of(_numbered(4, 18, 32) + 100), fps=24)
    frames, _, _ = conform_video(
        out, width=64, height=36, num_frames=4, fps=24, generate_audio=False
    )
    assert frames.shape == (4, 36, 64, 3)
    assert frames.dtype == np.uint8
    assert [int(f[..., 0].mean().round()) for f in frames] == [100, 101, 102, 103]


def test_wide_source_is_centre_cropped_to_square() -> None:
    out = VideoOutput(frames=FrameStream.of(_bars(90, 300)), fps=24)
    frames, _, _ = conform_video(
        out, width=40, height=40, num_frames=1, fps=24, generate_audio=False
    )
    centre = frames[0, :, 2:-2].astype(int)
    assert np.abs(centre - (0, 255, 0)).max() <= 3


def test_tall_source_is_centre_cropped_to_landscape() -> None:
    tall = _bars(90, 300).transpose(0, 2, 1, 3).copy()  # bars run top to bottom
    out = VideoOutput(frames=FrameStream.of(tall), fps=24)
    frames, _, _ = conform_video(
        out, width=32, height=18, num_frames=1, fps=24, generate_audio=False
    )
    assert frames.shape == (1, 18, 32, 3)
    assert np.abs(frames[0, 2:-2].astype(int) - (0, 255, 0)).max() <= 3


def test_longer_clip_at_the_same_rate_is_trimmed() -> None:
    out = VideoOutput(frames=FrameStream.of(_numbered(30, 36, 64)), fps=24)
    frames, _, _ = conform_video(
        out, width=64, height=36, num_frames=24, fps=24, generate_audio=False
    )
    assert frames[:, 0, 0, 0].tolist() == list(range(24))


def test_shorter_clip_is_stretched_over_the_duration() -> None:
    out = VideoOutput(frames=FrameStream.of(_numbered(10, 36, 64)), fps=24)
    frames, _, _ = conform_video(
        out, width=64, height=36, num_frames=24, fps=24, generate_audio=False
    )
    shown = frames[:, 0, 0, 0].tolist()
    assert len(shown) == 24
    assert shown[0] == 0 and shown[-1] == 9
    assert shown == sorted(shown)
    assert set(shown) == set(range(10))


def test_frame_indices_follow_time_across_rates() -> None:
    assert frame_indices(150, 30.0, 120, 24)[:6].tolist() == [0, 1, 2, 3, 5, 6]
    assert frame_indices(150, 30.0, 120, 24)[-1] == 148
    assert frame_indices(121, 24.0, 120, 24).tolist() == list(range(120))
    # 121 frames at 25 fps last 4.84 s, short of 5 s: stretched, ends kept.
    stretched = frame_indices(121, 25.0, 120, 24)
    assert stretched[0] == 0 and stretched[-1] == 120
    assert frame_indices(5, 24.0, 1, 24).tolist() == [0]


def test_crop_box() -> None:
    assert crop_box(1920, 1088, 1920, 1080) == (0, 4, 1920, 1080)
    assert crop_box(1920, 1080, 1080, 1080) == (420, 0, 1080, 1080)
    assert crop_box(1080, 1920, 1920, 1080) == (0, 656, 1080, 608)


def test_audio_mono_becomes_stereo_and_is_padded() -> None:
    mono = np.full((1, 16_000), 0.25, dtype=np.float32)
    out = VideoOutput(
        frames=FrameStream.of(_numbered(1, 36, 64)), fps=24, audio=mono, sample_rate=16_000
    )
    _, audio, rate = conform_video(
        out, width=64, height=36, num_frames=48, fps=24, generate_audio=True
    )
    assert rate == 16_000
    assert audio is not None
    assert audio.shape == (2, 32_000)
    assert audio.dtype == np.float32
    assert (audio[:, :16_000] == 0.25).all()
    assert (audio[:, 16_000:] == 0).all()


def test_audio_is_trimmed_and_clipped() -> None:
    wave = 3 * np.sin(np.arange(3 * 8_000, dtype=np.float32) / 50)
    loud = wave[None].repeat(2, 0)
    loud[0, 5] = np.nan
    trimmed = conform_audio(loud, 8_000, 2.0)
    assert trimmed.shape == (2, 16_000)
    assert trimmed.min() == -1.0 and trimmed.max() == 1.0
    assert trimmed[0, 5] == 0.0
    assert np.array_equal(trimmed[1, :100], np.clip(loud[1, :100], -1, 1))


def test_no_audio_when_not_asked_or_not_produced() -> None:
    sound = np.zeros((2, 100), dtype=np.float32)
    asked_not = VideoOutput(
        frames=FrameStream.of(_numbered(1, 36, 64)), fps=24, audio=sound, sample_rate=100
    )
    assert _conform(asked_not, generate_audio=False)[1:] == (None, 0)
    silent_engine = VideoOutput(frames=FrameStream.of(_numbered(1, 36, 64)), fps=24)
    assert _conform(silent_engine)[1:] == (None, 0)


@pytest.mark.parametrize(
    ("chunks", "match"),
    [
        ([np.zeros((2, 8, 8), np.uint8)], r"\[t, 8, 8, 3\] chunks"),
        ([np.zeros((2, 8, 6, 3), np.uint8)], r"\[t, 8, 8, 3\] chunks"),
        ([np.zeros((0, 8, 8, 3), np.uint8)], r"\[t, 8, 8, 3\] chunks"),
        ([np.zeros((2, 8, 8, 3), np.float32)], "must be uint8"),
        ([np.zeros((3, 8, 8, 3), np.uint8)], "sent 3 of the 4 frames it declared"),
        ([np.zeros((3, 8, 8, 3), np.uint8)] * 2, "more than the 4 frames it declared"),
    ],
)
def test_malformed_engine_frames_are_rejected(
    chunks: list[npt.NDArray[np.uint8]], match: str
) -> None:
    stream = FrameStream(4, 8, 8, chunks)
    with pytest.raises(ValueError, match=match):
        list(conform_frames(stream, 24, width=16, height=16, num_frames=4, fps=24))


def test_an_empty_stream_cannot_be_made() -> None:
    with pytest.raises(ValueError, match="needs frames"):
        FrameStream.of(np.zeros((0, 8, 8, 3), np.uint8))


@pytest.mark.parametrize("chunk", [1, 3, 8, 50])
@pytest.mark.parametrize(("count", "num_frames"), [(49, 48), (10, 30), (30, 12)])
def test_chunks_conform_as_the_whole_clip_does(chunk: int, count: int, num_frames: int) -> None:
    """Same frames, whatever the chunking: time sampling, stretching and dropping included."""
    source = _numbered(count, 36, 64)
    target = {"width": 32, "height": 32, "num_frames": num_frames, "fps": 24}
    whole = np.concatenate(list(conform_frames(FrameStream.of(source, count), 24, **target)))
    parts = list(conform_frames(FrameStream.of(source, chunk), 24, **target))
    assert np.array_equal(np.concatenate(parts), whole)
    assert whole.shape == (num_frames, 32, 32, 3)
    # Each chunk yields only the frames it shows: never more than its share of the output.
    assert max(len(p) for p in parts) <= chunk * -(-num_frames // count) + 1


@pytest.mark.parametrize(
    ("size", "crop"), [((64, 36), (36, 36)), ((16, 9), (9, 9)), ((32, 32), (32, 32))]
)
def test_without_resize_frames_are_cropped_at_the_source_scale(
    size: tuple[int, int], crop: tuple[int, int]
) -> None:
    """For a consumer that scales (the MP4 writer): the same frames and the same crop, only
    not resized; the centre columns of a wide source."""
    width, height = size
    source = _numbered(10, height, width)
    source[:, :, :, 1] = np.arange(width, dtype=np.uint8)[None, None, :]
    target = {"width": 32, "height": 32, "num_frames": 20, "fps": 24}
    kept = np.concatenate(
        list(conform_frames(FrameStream.of(source, 3), 12, resize=False, **target))
    )
    assert kept.shape == (20, crop[1], crop[0], 3)
    left = (width - crop[0]) // 2
    assert np.array_equal(kept[0, 0, :, 1], np.arange(left, left + crop[0]))
    resized = np.concatenate(list(conform_frames(FrameStream.of(source, 3), 12, **target)))
    assert np.array_equal(kept[:, 0, 0, 0], resized[:, 0, 0, 0])  # the same frames, in order


def test_chunks_are_conformed_as_they_arrive() -> None:
    """The first output chunk exists before the source's second chunk is made."""
    made: list[int] = []

    def chunks() -> Iterator[npt.NDArray[np.uint8]]:
        for index in range(4):
            made.append(index)
            yield _numbered(8, 36, 64)

    stream = FrameStream(32, 64, 36, chunks())
    out = conform_frames(stream, 24, width=32, height=32, num_frames=32, fps=24)
    first = next(out)
    assert len(first) == 8 and made == [0]


def test_conform_image_fits_exactly() -> None:
    image = Image.new("RGBA", (300, 200), (10, 20, 30, 255))
    fitted = conform_image(image, 128, 128)
    assert fitted.size == (128, 128)
    assert fitted.mode == "RGB"
    same = Image.new("RGB", (128, 128))
    assert conform_image(same, 128, 128) is same


def test_shots_audio_fades_at_cuts_only() -> None:
    from kinema.media.conform import fade_cuts

    rate = 1000
    parts = [np.ones((2, 500), dtype=np.float32), np.ones((2, 300), dtype=np.float32)]
    joined = np.concatenate(
        [fade_cuts(part, rate, index, 2, fade_s=0.01) for index, part in enumerate(parts)], axis=1
    )
    assert joined.shape == (2, 800)
    assert joined[0, 0] == 1.0 and joined[0, -1] == 1.0  # no fade at the clip's ends
    assert joined[0, 499] == 0.0 and joined[0, 500] == 0.0  # silent exactly at the cut
    assert joined[0, 490] > 0.9 and joined[0, 510] > 0.9  # back to full within 10 ms
    assert np.array_equal(parts[0], np.ones((2, 500)))  # the engine's audio is left as it was
    assert fade_cuts(parts[0], rate, 0, 1) is parts[0]  # one shot: nothing to fade
