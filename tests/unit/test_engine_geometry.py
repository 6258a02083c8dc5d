"""Working sizes and grid frame counts derived from capabilities."""

from __future__ import annotations

import pytest

from kinema.engines.base import Capabilities, Task
from kinema.engines.geometry import grid_frame_count, working_size

pytestmark = pytest.mark.unit

REAL_LTX2 = Capabilities(task=Task.IMAGE_TO_VIDEO, max_frames=361, frame_grid=8, size_multiple=32)
TINY = Capabilities(task=Task.IMAGE_TO_VIDEO, size_multiple=32, max_working_side=64)


@pytest.mark.parametrize(
    ("caps", "size", "expected"),
    [
        (REAL_LTX2, (1920, 1080), (1920, 1088)),
        (REAL_LTX2, (1080, 1920), (1088, 1920)),
        (REAL_LTX2, (1080, 1080), (1088, 1088)),
        (TINY, (1920, 1080), (64, 32)),
        (TINY, (1080, 1920), (32, 64)),
        (TINY, (1080, 1080), (64, 64)),
        (TINY, (40, 20), (32, 32)),  # never below one grid cell, never above the request's side
    ],
)
def test_working_size(caps: Capabilities, size: tuple[int, int], expected: tuple[int, int]) -> None:
    assert working_size(*size, caps) == expected


def test_working_size_rejects_empty_sizes() -> None:
    with pytest.raises(ValueError, match="positive"):
        working_size(0, 10, TINY)


@pytest.mark.parametrize(
    ("frames", "expected"), [(1, 1), (9, 9), (10, 17), (72, 73), (120, 121), (360, 361)]
)
def test_grid_frame_count_on_the_8k_plus_1_grid(frames: int, expected: int) -> None:
    assert grid_frame_count(frames, REAL_LTX2) == expected


def test_grid_of_one_keeps_the_count() -> None:
    caps = Capabilities(task=Task.IMAGE_TO_VIDEO, max_frames=400, frame_grid=1)

    assert grid_frame_count(120, caps) == 120


def test_grid_frame_count_beyond_max_frames_is_an_error() -> None:
    with pytest.raises(ValueError, match="max_frames 361"):
        grid_frame_count(361 + 1, REAL_LTX2)
    with pytest.raises(ValueError, match="at least 1"):
        grid_frame_count(0, REAL_LTX2)
