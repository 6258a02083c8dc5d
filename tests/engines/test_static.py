"""The zero-cost static engines: same interface and sizes as the real ones, no torch."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from PIL import Image

from kinema.engines.base import (
    EngineCancelled,
    ImageJob,
    ImageToImageEngine,
    ImageToVideoEngine,
    VideoJob,
)
from kinema.engines.registry import LoadOptions, load_engine
from kinema.engines.static import SAMPLE_RATE, TONE_AMPLITUDE, StaticImageEngine, StaticVideoEngine
from kinema.media.images import fit_image

pytestmark = pytest.mark.engines

RED, BLUE = (240, 20, 20), (20, 20, 240)


@pytest.fixture(scope="module")
def video_engine(tmp_path_factory: pytest.TempPathFactory) -> StaticVideoEngine:
    engine = load_engine("static-video", LoadOptions(models_dir=tmp_path_factory.mktemp("m")))
    assert isinstance(engine, StaticVideoEngine)
    return engine


@pytest.fixture(scope="module")
def image_engine(tmp_path_factory: pytest.TempPathFactory) -> StaticImageEngine:
    engine = load_engine("static-image", LoadOptions(models_dir=tmp_path_factory.mktemp("m")))
    assert isinstance(engine, StaticImageEngine)
    return engine


def video_job(**overrides: Any) -> VideoJob:
    base = VideoJob(
        prompt="p",
        negative_prompt="",
        start_image=Image.new("RGB", (640, 360), RED),
        width=1920,
        height=1080,
        num_frames=72,
        fps=24,
    )
    return replace(base, **overrides)


def ignore(_: float) -> None:
    pass


def test_still_video_with_a_quiet_tone(video_engine: StaticVideoEngine) -> None:
    values: list[float] = []
    out = video_engine.generate(video_job(), values.append)

    assert isinstance(video_engine, ImageToVideoEngine)
    assert out.frames.array().shape == (72, 32, 64, 3) and out.frames.array().dtype == np.uint8
    expected = np.asarray(fit_image(Image.new("RGB", (640, 360), RED), 64, 32))
    assert all(np.array_equal(frame, expected) for frame in out.frames.array())
    assert out.fps == 24
    assert out.audio is not None and out.audio.dtype == np.float32
    assert out.audio.shape == (2, 3 * SAMPLE_RATE)
    assert out.sample_rate == SAMPLE_RATE
    assert 0 < np.abs(out.audio).max() <= TONE_AMPLITUDE
    assert values == [1.0]


def test_end_image_is_a_linear_crossfade(video_engine: StaticVideoEngine) -> None:
    end = Image.new("RGB", (640, 360), BLUE)
    out = video_engine.generate(video_job(num_frames=5, end_image=end), ignore)

    red = out.frames.array()[:, 10, 10, 0].astype(int).tolist()
    assert red[0] == 240 and red[-1] == 20
    assert red == sorted(red, reverse=True)
    assert red[2] == pytest.approx((240 + 20) / 2, abs=1)


def test_no_audio_when_not_asked(video_engine: StaticVideoEngine) -> None:
    out = video_engine.generate(video_job(generate_audio=False), ignore)

    assert out.audio is None and out.sample_rate == 0


def test_deterministic(video_engine: StaticVideoEngine) -> None:
    a, b = (video_engine.generate(video_job(num_frames=24), ignore) for _ in range(2))

    assert np.array_equal(a.frames.array(), b.frames.array())
    assert a.audio is not None and b.audio is not None
    assert np.array_equal(a.audio, b.audio)


def test_cancel_propagates(video_engine: StaticVideoEngine) -> None:
    def cancel(_: float) -> None:
        raise EngineCancelled

    with pytest.raises(EngineCancelled):
        video_engine.generate(video_job(), cancel)


def test_image_is_the_source_fitted(image_engine: StaticImageEngine) -> None:
    values: list[float] = []
    source = Image.new("RGB", (300, 300), BLUE)
    out = image_engine.generate(ImageJob("p", source, width=1080, height=1920), values.append)

    assert isinstance(image_engine, ImageToImageEngine)
    assert out.image.size == (32, 64)
    assert np.array_equal(np.asarray(out.image), np.asarray(fit_image(source, 32, 64)))
    assert values == [1.0]


def test_static_engines_never_import_torch() -> None:
    code = (
        "import sys, pathlib\n"
        "from kinema.engines.registry import LoadOptions, load_engine\n"
        "for name in ('static-video', 'static-image'):\n"
        "    load_engine(name, LoadOptions(models_dir=pathlib.Path('.')))\n"
        "print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
