"""The worker's job execution with the tiny engines: element images reach the image pipeline as
references; shots become one generation each, joined to the exact duration; inputs are read
from and outputs written to the storage by key."""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from PIL import Image

from kinema.engines.base import Task
from kinema.jobs.spec import ElementInputs, ShotSpec
from kinema.media.video import probe_mp4
from kinema.runners.execute import ExecutionError, execute
from kinema.runners.protocol import RunTask
from kinema.storage.blobs import LocalBlobs
from tests.fixtures.specs import image_spec, video_spec

if TYPE_CHECKING:
    from kinema.engines.flux2 import Flux2KleinEngine
    from kinema.engines.ltx2 import LTX2Engine

pytestmark = pytest.mark.engines


def _png(color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (96, 80), color).save(buf, format="PNG")
    return buf.getvalue()


def test_element_images_are_passed_as_references(
    flux2_engine: Flux2KleinEngine, tmp_path: Path
) -> None:
    blobs = LocalBlobs(tmp_path)
    for key, color in (("src", (200, 0, 0)), ("e1", (0, 200, 0)), ("e1r", (0, 0, 200))):
        blobs.put_bytes(f"inputs/j/{key}", _png(color))
    spec = image_spec(
        "j",
        prompt="@Element1 beside @Element2",
        width=1024,
        height=576,
        image="inputs/j/src",
        elements=(
            ElementInputs(frontal="inputs/j/e1", references=("inputs/j/e1r",)),
            ElementInputs(frontal="inputs/j/e2"),
        ),
    )
    # The second element's image travels with the run instead of through the storage.
    task = RunTask(job_id="j", spec=spec, inline={"inputs/j/e2": _png((90, 90, 90))})
    result = execute({Task.IMAGE_TO_IMAGE: flux2_engine}, task, blobs, lambda _p, _w: None)
    assert result.metadata["reference_images"] == 3
    assert result.output_key == "outputs/j/output.png"
    with Image.open(tmp_path / result.output_key) as out:
        assert out.size == (1024, 576)


def test_shots_are_separate_generations_joined_exactly(
    ltx2_engine: LTX2Engine, tmp_path: Path
) -> None:
    seen: list[float] = []
    blobs = LocalBlobs(tmp_path)
    blobs.put_bytes("inputs/v/s", _png((10, 120, 30)))
    spec = video_spec(
        "v",
        prompt="",
        width=1080,
        height=1080,
        seed=3,
        shots=(ShotSpec(prompt="a", duration_s=1), ShotSpec(prompt="b", duration_s=2)),
        start_image="inputs/v/s",
    )
    result = execute(
        {Task.IMAGE_TO_VIDEO: ltx2_engine},
        RunTask(job_id="v", spec=spec),
        blobs,
        lambda value, _within: seen.append(value),
    )
    meta = result.metadata
    assert meta["shots"] == 2 and meta["frames"] == 72
    info = probe_mp4(tmp_path / result.output_key)
    assert info["frames"] == 72 and info["has_audio"]
    assert info["audio_duration"] == pytest.approx(3.0, abs=0.05)
    assert seen == sorted(seen) and seen[-1] == 1.0
    # The first shot (1 s of 3) ends a third of the way through denoising and decoding.
    s = ltx2_engine.capabilities.phase_shares
    assert pytest.approx(s.loading + (s.denoising + s.decoding) / 3) in seen


def test_video_elements_are_composed_by_the_image_engine(
    ltx2_engine: LTX2Engine, flux2_engine: Flux2KleinEngine, tmp_path: Path
) -> None:
    blobs = LocalBlobs(tmp_path)
    blobs.put_bytes("inputs/c/s", _png((10, 120, 30)))
    blobs.put_bytes("inputs/c/e", _png((250, 250, 0)))
    spec = video_spec(
        "c",
        prompt="@Element1 walks",
        generate_audio=False,
        seed=5,
        shots=(ShotSpec(prompt="@Element1 walks", duration_s=3),),
        start_image="inputs/c/s",
        elements=(ElementInputs(frontal="inputs/c/e"),),
    )
    engines = {Task.IMAGE_TO_VIDEO: ltx2_engine, Task.IMAGE_TO_IMAGE: flux2_engine}
    result = execute(engines, RunTask(job_id="c", spec=spec), blobs, lambda _p, _w: None)
    meta = result.metadata
    assert meta["composed_keyframe"] is True and meta["frames"] == 72
    assert not probe_mp4(tmp_path / result.output_key)["has_audio"]


def test_a_missing_input_fails_the_run_without_naming_the_storage(
    flux2_engine: Flux2KleinEngine, tmp_path: Path
) -> None:
    task = RunTask(job_id="m", spec=image_spec("m"))
    with pytest.raises(ExecutionError) as caught:
        execute(
            {Task.IMAGE_TO_IMAGE: flux2_engine}, task, LocalBlobs(tmp_path), lambda _p, _w: None
        )
    message = str(caught.value)
    assert "image input is no longer stored" in message and "inputs/" not in message
    assert not (tmp_path / "outputs").exists()


def test_audio_asked_of_an_engine_without_audio_is_reported_not_honoured(
    tmp_path: Path,
) -> None:
    from kinema.engines.registry import LoadOptions, load_engine

    engine = load_engine("static-video", LoadOptions(models_dir=tmp_path / "models"))
    blobs = LocalBlobs(tmp_path)
    blobs.put_bytes("inputs/a/s", _png((10, 120, 30)))
    spec = video_spec("a", start_image="inputs/a/s", generate_audio=False, audio_requested=True)
    task = RunTask(job_id="a", spec=spec)
    result = execute({Task.IMAGE_TO_VIDEO: engine}, task, blobs, lambda _p, _w: None)
    assert result.metadata["has_audio"] is False and result.metadata["audio_honoured"] is False


def test_a_run_reports_its_phases_in_order(tmp_path: Path) -> None:
    from kinema.engines.registry import LoadOptions, load_engine

    engine = load_engine("static-video", LoadOptions(models_dir=tmp_path / "models"))
    blobs = LocalBlobs(tmp_path)
    blobs.put_bytes("inputs/p/s", _png((10, 120, 30)))
    shots = (ShotSpec(prompt="a", duration_s=1), ShotSpec(prompt="b", duration_s=2))
    spec = video_spec("p", start_image="inputs/p/s", shots=shots)
    phases: list[str] = []
    heard: list[tuple[str, float]] = []

    def report(value: float, _within: float | None) -> None:
        heard.append((phases[-1], value))

    execute(
        {Task.IMAGE_TO_VIDEO: engine}, RunTask(job_id="p", spec=spec), blobs, report, phases.append
    )
    assert phases == [
        "loading",
        *("denoising", "decoding") * 2,  # shot by shot, each encoded as it is decoded
        "encoding",
        "storing",
    ]
    values = [value for _phase, value in heard]
    assert values == sorted(values) and values[-1] == 1.0
    assert [value for phase, value in heard if value == 1.0] == [1.0]  # once, when stored
    assert heard[-2][0] == "storing" and heard[-2][1] < 1.0
