"""The worker's job execution with the tiny engines: element images reach the image pipeline as
references; shots become one generation each, joined to the exact duration."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from PIL import Image

from kinema.engines.base import Task
from kinema.media.video import probe_mp4
from kinema.runners.execute import execute

if TYPE_CHECKING:
    from kinema.engines.flux2 import Flux2KleinEngine
    from kinema.engines.ltx2 import LTX2Engine

pytestmark = pytest.mark.engines


def _image(path: Path, color: tuple[int, int, int]) -> str:
    Image.new("RGB", (96, 80), color).save(path)
    return str(path)


def test_element_images_are_passed_as_references(
    flux2_engine: Flux2KleinEngine, tmp_path: Path
) -> None:
    inputs = {
        "image": _image(tmp_path / "src.png", (200, 0, 0)),
        "element1_frontal": _image(tmp_path / "e1.png", (0, 200, 0)),
        "element1_references": [_image(tmp_path / "e1r.png", (0, 0, 200))],
        "element2_frontal": _image(tmp_path / "e2.png", (90, 90, 90)),
    }
    params = {
        "prompt": "@Element1 beside @Element2",
        "width": 1024,
        "height": 576,
        "output_format": "png",
        "seed": 1,
    }
    result = execute(
        {Task.IMAGE_TO_IMAGE: flux2_engine},
        "image-to-image",
        params,
        inputs,
        tmp_path,
        lambda _p: None,
    )
    assert result["metadata"]["reference_images"] == 3
    with Image.open(result["output_path"]) as out:
        assert out.size == (1024, 576)


def test_shots_are_separate_generations_joined_exactly(
    ltx2_engine: LTX2Engine, tmp_path: Path
) -> None:
    seen: list[float] = []
    params = {
        "prompt": "",
        "negative_prompt": "",
        "width": 1080,
        "height": 1080,
        "fps": 24,
        "duration_s": 3,
        "cfg_scale": 0.5,
        "generate_audio": True,
        "seed": 3,
        "shots": [{"prompt": "a", "duration_s": 1}, {"prompt": "b", "duration_s": 2}],
    }
    inputs = {"start_image": _image(tmp_path / "s.png", (10, 120, 30))}
    result = execute(
        {Task.IMAGE_TO_VIDEO: ltx2_engine}, "image-to-video", params, inputs, tmp_path, seen.append
    )
    meta = result["metadata"]
    assert meta["shots"] == 2 and meta["frames"] == 72
    info = probe_mp4(Path(result["output_path"]))
    assert info["frames"] == 72 and info["has_audio"]
    assert info["audio_duration"] == pytest.approx(3.0, abs=0.05)
    assert seen == sorted(seen) and seen[-1] == pytest.approx(1.0)
    assert any(0.4 < p <= 0.5 for p in seen)  # the first shot ends half-way


def test_video_elements_are_composed_by_the_image_engine(
    ltx2_engine: LTX2Engine, flux2_engine: Flux2KleinEngine, tmp_path: Path
) -> None:
    params = {
        "prompt": "@Element1 walks",
        "negative_prompt": "",
        "width": 1920,
        "height": 1080,
        "fps": 24,
        "duration_s": 3,
        "cfg_scale": 0.5,
        "generate_audio": False,
        "seed": 5,
    }
    inputs = {
        "start_image": _image(tmp_path / "s.png", (10, 120, 30)),
        "element1_frontal": _image(tmp_path / "e.png", (250, 250, 0)),
    }
    engines = {Task.IMAGE_TO_VIDEO: ltx2_engine, Task.IMAGE_TO_IMAGE: flux2_engine}
    result = execute(engines, "image-to-video", params, inputs, tmp_path, lambda _p: None)
    meta = result["metadata"]
    assert meta["composed_keyframe"] is True and meta["frames"] == 72
    assert not probe_mp4(Path(result["output_path"]))["has_audio"]
