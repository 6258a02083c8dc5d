"""Every parameter of both contract endpoints, from the request body to the pipeline call and into
the output, on the tiny presets.

A body goes through the endpoint's own request model and parameter mapping
(:data:`kinema.api.endpoints.ENDPOINTS`), the job through the worker's
:func:`~kinema.runners.execute.execute`, and a spy standing in for the diffusers pipeline records
what it was called with. A few generations are shared by a module (encoding 1080p is what costs);
each test then checks one parameter. docs/engines.md, "Contract parameters → tests", maps each
contract row to the tests here.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import av
import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from kinema.api.endpoints import ENDPOINTS, Plan
from kinema.api.schemas import DEFAULT_NEGATIVE_PROMPT, IMAGE_SIZES, VIDEO_SIZES
from kinema.engines.base import Engine, ImageJob, Task, VideoJob
from kinema.engines.geometry import working_size
from kinema.engines.plan import split_prompt
from kinema.engines.presets import FLUX2_KLEIN_4B, LTX25_DISTILLED, TINY_FLUX2_KLEIN, TINY_LTX2
from kinema.engines.registry import LoadOptions, load_engine
from kinema.jobs.spec import dump_spec
from kinema.media.conform import conform_image
from kinema.media.images import IMAGE_MIME, fit_image
from kinema.media.video import MediaInfo, probe_mp4
from kinema.runners.execute import execute
from kinema.runners.protocol import RunResult, RunTask
from kinema.storage.blobs import LocalBlobs

if TYPE_CHECKING:
    from kinema.engines.flux2 import Flux2KleinEngine
    from kinema.engines.ltx2 import LTX2Engine

pytestmark = pytest.mark.engines

VIDEO, IMAGE = "kling-3-standard-image2video", "kling-3-image2image"
RED, GREEN, BLUE, YELLOW = (220, 30, 30), (30, 200, 30), (30, 30, 220), (230, 230, 20)
STORED = "stored"
"""Stands for an image URL: the worker receives fetched files, so the value never matters."""


# Helpers ----------------------------------------------------------------------------------------


class PipelineSpy:
    """Stands in for an engine's diffusers pipeline: records each call's keyword arguments and
    result, and forwards everything else to the real pipeline."""

    def __init__(self, pipeline: Any) -> None:
        self.pipeline = pipeline
        self.calls: list[dict[str, Any]] = []
        self.results: list[Any] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.pipeline, name)

    def __call__(self, **kwargs: Any) -> Any:
        self.calls.append(kwargs)
        self.results.append(self.pipeline(**kwargs))
        return self.results[-1]


@contextmanager
def spying(*engines: Any) -> Iterator[list[PipelineSpy]]:
    """Put a :class:`PipelineSpy` in front of each engine's pipeline for the block."""
    with pytest.MonkeyPatch.context() as patch:
        spies = [PipelineSpy(engine.pipeline) for engine in engines]
        for engine, spy in zip(engines, spies, strict=True):
            patch.setattr(engine, "pipeline", spy)
        yield spies


def plan(slug: str, job_id: str = "job", **body: Any) -> Plan:
    """The job spec the API derives from ``body``, through the endpoint's own model."""
    endpoint = ENDPOINTS[slug]
    source = "start_image_url" if slug == VIDEO else "image_url"
    request = endpoint.request_model.model_validate({source: STORED, **body})
    presets = {Task.IMAGE_TO_VIDEO: TINY_LTX2, Task.IMAGE_TO_IMAGE: TINY_FLUX2_KLEIN}
    return endpoint.plan(request, job_id, presets)


def params(slug: str, **body: Any) -> dict[str, Any]:
    """The job spec of ``body``, as stored."""
    return dump_spec(plan(slug, **body).spec)


def staged(out: Path, slug: str, body: dict[str, Any], inputs: dict[str, Any]) -> RunTask:
    """The run of ``body``, its inputs (files by input name, lists for references) stored
    under the keys its spec names, in a storage at ``out / "files"``."""
    job = plan(slug, out.name, **body)
    blobs = LocalBlobs(out / "files")
    taken: dict[str, int] = {}
    for ref in job.media:
        name = ref.key.rsplit("/", 1)[-1].split("-", 1)[1]
        value = inputs[name]
        if isinstance(value, list):
            taken[name] = taken.get(name, -1) + 1
            value = value[taken[name]]
        blobs.put_bytes(ref.key, Path(value).read_bytes())
    return RunTask(job_id=out.name, spec=job.spec)


def plain(color: tuple[int, int, int], size: tuple[int, int] = (96, 80)) -> Image.Image:
    return Image.new("RGB", size, color)


def banded() -> Image.Image:
    """Red between green side bands: a center crop to 1:1 or narrower keeps only red, a stretch
    or an off-center crop does not."""
    image = plain(GREEN, (240, 90))
    image.paste(RED, (60, 0, 180, 90))
    return image


def saved(directory: Path, name: str, image: Image.Image) -> str:
    path = directory / f"{name}.png"
    image.save(path)
    return str(path)


def pixels(image: Any) -> npt.NDArray[np.int64]:
    return np.asarray(image).astype(np.int64)


def is_color(image: Any, color: tuple[int, int, int], tolerance: int = 12) -> bool:
    return bool(np.abs(pixels(image) - np.array(color)).max() <= tolerance)


@dataclass
class Run:
    """One job through ``execute``: its result and what each pipeline was called with."""

    params: dict[str, Any]
    result: RunResult
    root: Path
    calls: list[dict[str, Any]]
    composer_calls: list[dict[str, Any]] = field(default_factory=list)
    composer_results: list[Any] = field(default_factory=list)

    @property
    def meta(self) -> dict[str, Any]:
        return dict(self.result.metadata)

    @property
    def path(self) -> Path:
        return self.root / self.result.output_key

    @property
    def probe(self) -> MediaInfo:
        return probe_mp4(self.path)


def run_video(
    engine: Engine,
    body: dict[str, Any],
    inputs: dict[str, Any],
    out: Path,
    composer: Engine | None = None,
) -> Run:
    engines: dict[Task, Engine] = {Task.IMAGE_TO_VIDEO: engine}
    if composer is not None:
        engines[Task.IMAGE_TO_IMAGE] = composer
    task = staged(out, VIDEO, body, inputs)
    job = dump_spec(task.spec)
    watched = [e for e in (engine, composer) if e is not None and hasattr(e, "pipeline")]
    with spying(*watched) as spies:
        result = execute(engines, task, LocalBlobs(out / "files"), lambda _p, _w: None)
    calls = spies[0].calls if spies else []
    if composer is None:
        return Run(job, result, out / "files", calls)
    return Run(job, result, out / "files", calls, spies[1].calls, spies[1].results)


def run_image(
    engine: Flux2KleinEngine, body: dict[str, Any], inputs: dict[str, Any], out: Path
) -> tuple[Run, list[ImageJob]]:
    jobs: list[ImageJob] = []
    generate = engine.generate

    def record(job: ImageJob, progress: Callable[[float], None]) -> Any:
        jobs.append(job)
        return generate(job, progress)

    out.mkdir(parents=True, exist_ok=True)
    task = staged(out, IMAGE, body, inputs)
    with spying(engine) as (spy,), pytest.MonkeyPatch.context() as patch:
        patch.setattr(engine, "generate", record)
        blobs = LocalBlobs(out / "files")
        result = execute({Task.IMAGE_TO_IMAGE: engine}, task, blobs, lambda _p, _w: None)
    return Run(dump_spec(task.spec), result, out / "files", spy.calls), jobs


def first_and_last_frames(path: Path) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
    first = last = None
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            last = frame.to_ndarray(format="rgb24")
            first = last if first is None else first
    assert first is not None and last is not None
    return first, last


# Shared video generations -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def quality(load_options: LoadOptions) -> LTX2Engine:
    """``tiny-ltx2-quality``: the tiny weights with cfg_scale and negative_prompt honoured."""
    from kinema.engines.ltx2 import LTX2Engine

    engine = load_engine("tiny-ltx2-quality", load_options)
    assert isinstance(engine, LTX2Engine) and engine.capabilities.honours_cfg
    return engine


@pytest.fixture(scope="module")
def single(quality: LTX2Engine, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """One prompt, start and end image, 9:16, 3 s, cfg 0.75, a negative prompt, audio, a seed."""
    out = tmp_path_factory.mktemp("single")
    body = {
        "prompt": "a red kite rises over the hill",
        "end_image_url": STORED,
        "aspect_ratio": "9:16",
        "duration": 3,
        "cfg_scale": 0.75,
        "negative_prompt": "fog, rain",
        "seed": 21,
    }
    inputs = {
        "start_image": saved(out, "start", banded()),
        "end_image": saved(out, "end", plain(BLUE)),
    }
    return run_video(quality, body, inputs, out)


INTELLIGENT = "Shot 1: a door opens. Shot 2: a dog runs in"


@pytest.fixture(scope="module")
def shots(ltx2_engine: LTX2Engine, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """shot_type intelligence with an end image, 1:1, no audio, on the distilled preset."""
    out = tmp_path_factory.mktemp("shots")
    body = {
        "prompt": INTELLIGENT,
        "shot_type": "intelligence",
        "end_image_url": STORED,
        "aspect_ratio": "1:1",
        "duration": "3",
        "generate_audio": False,
        "cfg_scale": 1.0,
        "negative_prompt": "fog",
        "seed": 9,
    }
    inputs = {
        "start_image": saved(out, "start", plain(RED)),
        "end_image": saved(out, "end", plain(BLUE)),
    }
    return run_video(ltx2_engine, body, inputs, out)


@pytest.fixture(scope="module")
def multi(
    ltx2_engine: LTX2Engine,
    flux2_engine: Flux2KleinEngine,
    tmp_path_factory: pytest.TempPathFactory,
) -> Run:
    """multi_prompt with a context prompt and one element; defaults otherwise (16:9, audio on)."""
    out = tmp_path_factory.mktemp("multi")
    body = {
        "prompt": "@Element1 in the rain",
        "multi_prompt": [
            {"prompt": "@Element1 walks", "duration": 2},
            {"prompt": "close-up of @Element1", "duration": "1"},
        ],
        "duration": 3,
        "elements": [{"frontal_image_url": STORED, "reference_image_urls": [STORED]}],
        "seed": 4,
    }
    inputs = {
        "start_image": saved(out, "start", plain(RED)),
        "element1_frontal": saved(out, "frontal", plain(YELLOW)),
        "element1_references": [saved(out, "reference", plain(GREEN))],
    }
    return run_video(ltx2_engine, body, inputs, out, composer=flux2_engine)


@pytest.fixture(scope="module")
def still(load_options: LoadOptions, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """``static-video`` (pixels pass through unchanged): red start, blue end, 1:1, 3 s."""
    out = tmp_path_factory.mktemp("still")
    body = {
        "prompt": "x",
        "end_image_url": STORED,
        "aspect_ratio": "1:1",
        "duration": 3,
        "generate_audio": False,
    }
    inputs = {
        "start_image": saved(out, "start", plain(RED)),
        "end_image": saved(out, "end", plain(BLUE)),
    }
    return run_video(load_engine("static-video", load_options), body, inputs, out)


# Image to video ---------------------------------------------------------------------------------


def test_prompt_reaches_the_pipeline_and_changes_the_video(
    single: Run, ltx2_engine: LTX2Engine
) -> None:
    assert [call["prompt"] for call in single.calls] == ["a red kite rises over the hill"]

    def render(prompt: str) -> npt.NDArray[np.uint8]:
        job = VideoJob(prompt, "", plain(RED), 1920, 1080, num_frames=9, fps=24, seed=3)
        return ltx2_engine.generate(job, lambda _p: None).frames.array()

    assert not np.array_equal(render("a red kite"), render("a blue boat at sea"))


def test_start_image_is_frame_zero_center_cropped_to_the_aspect(single: Run) -> None:
    start = single.calls[0]["conditions"][0]

    assert start.index == 0
    assert start.frames.size == (32, 64)  # 9:16 at the tiny working size
    assert is_color(start.frames, RED)  # the green side bands are cropped away, not squeezed in


def test_end_image_is_a_keyframe_at_the_last_frame(single: Run) -> None:
    _start, end = single.calls[0]["conditions"]

    assert end.index != 0 and is_color(end.frames, BLUE)
    assert single.meta["end_image_frame"] == single.meta["frames"] - 1 == 71


def test_start_and_end_images_are_the_first_and_last_frames_of_the_mp4(still: Run) -> None:
    first, last = first_and_last_frames(still.path)

    assert first.shape == (1080, 1080, 3)
    assert is_color(first, RED) and is_color(last, BLUE)


@pytest.mark.parametrize(
    ("run", "aspect_ratio", "working"),
    [("multi", "16:9", (64, 32)), ("single", "9:16", (32, 64)), ("shots", "1:1", (64, 64))],
)
def test_aspect_ratio_sets_the_rendered_and_the_output_size(
    run: str, aspect_ratio: str, working: tuple[int, int], request: pytest.FixtureRequest
) -> None:
    result: Run = request.getfixturevalue(run)
    size = VIDEO_SIZES[aspect_ratio]  # type: ignore[index]

    assert result.params["aspect_ratio"] == aspect_ratio
    assert {(call["width"], call["height"]) for call in result.calls} == {working}
    assert (result.probe["width"], result.probe["height"]) == size
    assert (result.meta["width"], result.meta["height"]) == size
    # The production preset renders the same aspect on its 64-pixel grid (cropped to 1080 after).
    rendered = working_size(*size, LTX25_DISTILLED.capabilities)
    assert rendered[0] / rendered[1] == pytest.approx(size[0] / size[1], rel=0.01)


def test_duration_sets_the_frame_count_fps_and_seconds(single: Run) -> None:
    call = single.calls[0]
    info = single.probe

    assert call["num_frames"] == 73 and call["frame_rate"] == 24.0  # 8k+1 grid covering 72
    assert info["frames"] == 72 and info["fps"] == pytest.approx(24)
    assert info["duration"] == pytest.approx(3.0, abs=0.05)
    assert single.meta["frames"] == 72 and single.meta["duration"] == 3.0
    assert single.meta["fps"] == 24


def test_cfg_scale_maps_to_the_guidance_scale(single: Run) -> None:
    call = single.calls[0]

    assert call["guidance_scale"] == call["audio_guidance_scale"] == pytest.approx(5.0)  # 0.75
    assert single.meta["guidance_scale"] == pytest.approx(5.0)
    assert "cfg_scale_honoured" not in single.meta


def test_distilled_preset_ignores_cfg_scale_and_negative_prompt_and_says_so(shots: Run) -> None:
    assert shots.params["cfg_scale"] == 1.0 and shots.params["negative_prompt"] == "fog"
    for call in shots.calls:
        assert call["guidance_scale"] == 1.0 and "negative_prompt" not in call
    assert shots.meta["cfg_scale_honoured"] is False and shots.meta["guidance_scale"] == 1.0


def test_negative_prompt_reaches_the_guided_pipeline(single: Run) -> None:
    assert single.calls[0]["negative_prompt"] == "fog, rain"
    assert params(VIDEO, prompt="x")["negative_prompt"] == DEFAULT_NEGATIVE_PROMPT


def test_generate_audio_true_is_an_aac_track_as_long_as_the_video(single: Run) -> None:
    info = single.probe

    assert single.params["generate_audio"] is True and single.meta["has_audio"] is True
    assert info["has_audio"] and info["audio_codec"] == "aac"
    assert info["audio_channels"] == 2 and info["audio_sample_rate"] == 48000
    assert info["audio_duration"] == pytest.approx(3.0, abs=0.05)


def test_generate_audio_false_has_no_audio_stream(shots: Run) -> None:
    assert shots.meta["has_audio"] is False
    assert not shots.probe["has_audio"]


def test_multi_prompt_is_one_call_per_shot_with_its_prompt_and_length(multi: Run) -> None:
    # The request's prompt is kept as context before each shot's; @Element1 reads "subject 1"
    # because the element is composed into the first frame (below).
    assert [call["prompt"] for call in multi.calls] == [
        "subject 1 in the rain subject 1 walks",
        "subject 1 in the rain close-up of subject 1",
    ]
    assert [call["num_frames"] for call in multi.calls] == [49, 25]  # 2 s and 1 s on the grid
    info = multi.probe
    assert multi.meta["shots"] == 2 and info["frames"] == 72
    assert info["audio_duration"] == pytest.approx(3.0, abs=0.05)


def test_shot_type_intelligence_splits_the_prompt_and_customize_keeps_one_shot(
    shots: Run, single: Run
) -> None:
    assert split_prompt(INTELLIGENT, 3) == [("a door opens.", 2), ("a dog runs in", 1)]
    assert [call["prompt"] for call in shots.calls] == ["a door opens.", "a dog runs in"]
    assert [call["num_frames"] for call in shots.calls] == [49, 25]
    assert shots.meta["shots"] == 2 and shots.probe["frames"] == 72
    # The end image closes the last shot only; its keyframe is that shot's last frame.
    assert [len(call["conditions"]) for call in shots.calls] == [1, 2]
    # Counted in the whole video (48 + 23), and within its shot in that shot's own facts.
    assert shots.meta["end_image_frame"] == 71
    assert shots.meta["shot_info"][-1]["end_image_frame"] == 23
    # customize (the default) without multi_prompt: the prompt is one shot.
    assert single.params["shot_type"] == "customize" and len(single.calls) == 1
    assert single.meta["shots"] == 1


def test_elements_are_composed_into_the_first_frame(multi: Run) -> None:
    (compose,) = multi.composer_calls
    assert [
        is_color(image, color)
        for image, color in zip(compose["image"], (RED, YELLOW, GREEN), strict=True)
    ] == [True] * 3
    assert compose["prompt"] == "the subject of image 2 in the rain"
    # What the image engine made, conformed to 1920×1080, is frame 0 of every shot.
    composed = multi.composer_results[0][0][0].convert("RGB")
    expected = pixels(fit_image(conform_image(composed, 1920, 1080), 64, 32))
    for call in multi.calls:
        assert np.array_equal(pixels(call["conditions"][0].frames), expected)
    assert multi.meta["composed_keyframe"] is True


def test_seed_reaches_the_generator_and_is_reported(single: Run, shots: Run) -> None:
    assert single.calls[0]["generator"].initial_seed() == 21
    assert single.meta["seed"] == 21
    # Several shots: each its own noise, all derived from the one reported seed.
    assert [call["generator"].initial_seed() for call in shots.calls] == [9, 10]
    assert shots.meta["seed"] == 9
    assert [info["seed"] for info in shots.meta["shot_info"]] == [9, 10]


def test_a_drawn_seed_is_reported_once_and_reproduces_every_shot(
    ltx2_engine: LTX2Engine, tmp_path_factory: pytest.TempPathFactory
) -> None:
    out = tmp_path_factory.mktemp("drawn")
    body = {"prompt": INTELLIGENT, "shot_type": "intelligence", "duration": "3"}
    inputs = {"start_image": saved(out, "start", plain(RED))}
    drawn = run_video(ltx2_engine, body, inputs, tmp_path_factory.mktemp("drawn-a"))
    seed = drawn.meta["seed"]
    assert [call["generator"].initial_seed() for call in drawn.calls] == [seed, seed + 1]
    again = run_video(ltx2_engine, {**body, "seed": seed}, inputs, tmp_path_factory.mktemp("b"))
    assert [call["generator"].initial_seed() for call in again.calls] == [seed, seed + 1]


def test_voice_ids_are_refused_at_submit_by_presets_that_cannot_follow_audio() -> None:
    from kinema.engines.registry import presets
    from kinema.errors import InvalidRequest

    endpoint = ENDPOINTS[VIDEO]
    body = endpoint.request_model.model_validate(
        {"start_image_url": STORED, "prompt": '<<<voice_1>>> says "hi"', "voice_ids": ["voice_a"]}
    )
    image = next(p for p in presets() if p.name == "tiny-flux2-klein")
    videos = [p for p in presets() if p.capabilities.task is Task.IMAGE_TO_VIDEO]
    shipped = [p for p in videos if p.loader.startswith("kinema.")]
    following = {p.name for p in shipped if p.capabilities.follows_audio}
    assert following == {
        "tiny-ltx2",
        "tiny-ltx2-quality",
        "tiny-ltx2-two-stage",
        "ltx2.5-distilled",
        "ltx2.5-quality",
    }
    for video in shipped:
        engines = {Task.IMAGE_TO_VIDEO: video, Task.IMAGE_TO_IMAGE: image}
        if video.name in following:
            endpoint.check(body, engines)  # honoured: tests/engines/test_voice_ids.py
            continue
        with pytest.raises(InvalidRequest, match="voice_ids: voices are not supported"):
            endpoint.check(body, engines)


# Image to image ---------------------------------------------------------------------------------


def test_image_url_is_the_first_pipeline_image_center_cropped(
    flux2_engine: Flux2KleinEngine, tmp_path: Path
) -> None:
    inputs = {"image": saved(tmp_path, "source", banded())}
    run, _ = run_image(flux2_engine, {"prompt": "x", "aspect_ratio": "1:1"}, inputs, tmp_path)

    source = run.calls[0]["image"][0]
    assert source.size == (64, 64) and is_color(source, RED)


def test_image_prompt_reaches_the_pipeline_and_changes_the_image(
    flux2_engine: Flux2KleinEngine, tmp_path: Path
) -> None:
    inputs = {"image": saved(tmp_path, "source", plain(RED))}
    outputs = []
    for n, prompt in enumerate(("make it night", "a watercolor of a boat")):
        run, _ = run_image(flux2_engine, {"prompt": prompt, "seed": 1}, inputs, tmp_path / str(n))
        assert run.calls[0]["prompt"] == prompt
        outputs.append(run.path.read_bytes())
    assert outputs[0] != outputs[1]


@pytest.mark.parametrize("aspect_ratio", ["16:9", "9:16", "1:1", "4:3", "3:4", "3:2", "2:3"])
def test_image_aspect_ratio_sets_the_rendered_and_the_output_size(
    flux2_engine: Flux2KleinEngine, tmp_path: Path, aspect_ratio: str
) -> None:
    size = IMAGE_SIZES[(aspect_ratio, "1K")]  # type: ignore[index]
    inputs = {"image": saved(tmp_path, "source", plain(RED))}
    run, _ = run_image(
        flux2_engine, {"prompt": "x", "aspect_ratio": aspect_ratio}, inputs, tmp_path
    )

    call = run.calls[0]
    assert (call["width"], call["height"]) == working_size(*size, flux2_engine.capabilities)
    with Image.open(run.path) as out:
        assert out.size == size
    assert (run.meta["width"], run.meta["height"]) == size


@pytest.mark.parametrize(("resolution", "size"), [("1K", (1024, 576)), ("2K", (2048, 1152))])
def test_resolution_sets_the_output_size(
    flux2_engine: Flux2KleinEngine, tmp_path: Path, resolution: str, size: tuple[int, int]
) -> None:
    inputs = {"image": saved(tmp_path, "source", plain(RED))}
    run, jobs = run_image(flux2_engine, {"prompt": "x", "resolution": resolution}, inputs, tmp_path)

    assert (jobs[0].width, jobs[0].height) == size
    # The tiny preset caps its working size at 64 px; the production one renders the full size.
    assert (run.calls[0]["width"], run.calls[0]["height"]) == (64, 32)
    assert working_size(*size, FLUX2_KLEIN_4B.capabilities) == size
    with Image.open(run.path) as out:
        assert out.size == size


@pytest.mark.parametrize(
    ("output_format", "pil_format"),
    [(None, "PNG"), ("png", "PNG"), ("jpeg", "JPEG"), ("webp", "WEBP")],
)
def test_output_format_sets_the_encoding_and_the_mime_type(
    flux2_engine: Flux2KleinEngine, tmp_path: Path, output_format: str | None, pil_format: str
) -> None:
    inputs = {"image": saved(tmp_path, "source", plain(RED))}
    body = {"prompt": "x", "output_format": output_format}  # None: omitted, the default applies
    run, _ = run_image(flux2_engine, body, inputs, tmp_path)

    fmt = output_format or "png"
    assert run.result.content_type == IMAGE_MIME[fmt] and run.meta["format"] == fmt
    assert run.path.suffix == f".{fmt}"
    with Image.open(io.BytesIO(run.path.read_bytes())) as out:
        assert out.format == pil_format


def test_image_elements_follow_the_source_in_order(
    flux2_engine: Flux2KleinEngine, tmp_path: Path
) -> None:
    inputs = {
        "image": saved(tmp_path, "source", plain(RED)),
        "element1_frontal": saved(tmp_path, "e1", plain(YELLOW)),
        "element1_references": [saved(tmp_path, "e1r", plain(GREEN))],
        "element2_frontal": saved(tmp_path, "e2", plain(BLUE)),
    }
    body = {
        "prompt": "@Element2 next to @Element1",
        "elements": [
            {"frontal_image_url": STORED, "reference_image_urls": [STORED]},
            {"frontal_image_url": STORED},
        ],
    }
    run, _ = run_image(flux2_engine, body, inputs, tmp_path)

    call = run.calls[0]
    colors = (RED, YELLOW, GREEN, BLUE)
    assert [is_color(image, color) for image, color in zip(call["image"], colors, strict=True)] == [
        True
    ] * 4
    assert call["prompt"] == "the subject of image 4 next to the subject of image 2"
    assert run.meta["reference_images"] == 3


def test_image_seed_reaches_the_generator_and_repeats_the_image(
    flux2_engine: Flux2KleinEngine, tmp_path: Path
) -> None:
    inputs = {"image": saved(tmp_path, "source", plain(RED))}
    outputs = []
    for n in range(2):
        run, _ = run_image(flux2_engine, {"prompt": "x", "seed": 5}, inputs, tmp_path / str(n))
        assert run.calls[0]["generator"].initial_seed() == 5 and run.meta["seed"] == 5
        outputs.append(run.path.read_bytes())
    assert outputs[0] == outputs[1]
