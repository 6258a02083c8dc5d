"""Qwen-Image-Edit engine on tiny random weights: real pipeline, sizes, references as pictures,
true CFG and its transformer passes, progress, cancel, seeds; missing production weights."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import torch
from PIL import Image

from kinema.engines.base import Element, EngineCancelled, ImageJob, ImageToImageEngine
from kinema.engines.plan import picture_prompt, reference_prompt
from kinema.engines.registry import LoadOptions, load_engine
from kinema.engines.weights import WeightsMissing

if TYPE_CHECKING:
    from kinema.engines.qwen import QwenImageEditEngine

pytestmark = pytest.mark.engines

Watch = Callable[[torch.nn.Module], Callable[[], int]]


@pytest.fixture(scope="session")
def qwen_engine(load_options: LoadOptions) -> QwenImageEditEngine:
    from kinema.engines.qwen import QwenImageEditEngine

    engine = load_engine("tiny-qwen-image-edit", load_options)
    assert isinstance(engine, QwenImageEditEngine)
    return engine


def with_cfg(engine: QwenImageEditEngine, cfg_scale: float) -> QwenImageEditEngine:
    """The same loaded pipeline under another guidance setting."""
    from kinema.engines.qwen import QwenImageEditEngine

    settings = replace(engine.settings, cfg_scale=cfg_scale)
    return QwenImageEditEngine(engine.pipeline, engine.capabilities, settings, engine.steps)


def job(**overrides: Any) -> ImageJob:
    base = ImageJob(
        prompt="make it night",
        image=Image.new("RGB", (640, 480), (200, 120, 40)),
        width=1920,
        height=1080,
        seed=3,
    )
    return replace(base, **overrides)


def element(color: tuple[int, int, int], references: int = 0) -> Element:
    image = Image.new("RGB", (300, 400), color)
    return Element(frontal=image, references=(image,) * references)


def ignore(_: float) -> None:
    pass


def test_loads_the_real_pipeline_through_from_pretrained(qwen_engine: QwenImageEditEngine) -> None:
    from diffusers.models.transformers.transformer_qwenimage import QwenImageTransformer2DModel
    from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit_plus as module
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import (
        Qwen2_5_VLForConditionalGeneration,
    )

    from kinema.engines.qwen import QwenVLImageProcessor

    pipeline = qwen_engine.pipeline
    assert isinstance(qwen_engine, ImageToImageEngine)
    assert isinstance(pipeline, module.QwenImageEditPlusPipeline)
    assert isinstance(pipeline.transformer, QwenImageTransformer2DModel)
    assert pipeline.transformer.config.zero_cond_t  # as in Qwen-Image-Edit-2511
    assert isinstance(pipeline.text_encoder, Qwen2_5_VLForConditionalGeneration)
    assert isinstance(pipeline.processor, QwenVLImageProcessor)
    # The tiny image areas live in a subclass; diffusers' own constants are untouched.
    assert type(pipeline) is not module.QwenImageEditPlusPipeline
    assert (module.CONDITION_IMAGE_SIZE, module.VAE_IMAGE_SIZE) == (384 * 384, 1024 * 1024)


@pytest.mark.parametrize(
    ("width", "height", "expected"),
    [
        (1920, 1080, (64, 32)),
        (1080, 1920, (32, 64)),
        (1024, 1024, (64, 64)),
        (1024, 768, (64, 48)),
    ],
)
def test_renders_at_the_working_size(
    qwen_engine: QwenImageEditEngine, width: int, height: int, expected: tuple[int, int]
) -> None:
    out = qwen_engine.generate(job(width=width, height=height), ignore)

    assert out.image.mode == "RGB"
    assert out.image.size == expected
    assert out.info["working_size"] == list(expected)


def test_source_and_elements_reach_the_pipeline_as_numbered_pictures(
    qwen_engine: QwenImageEditEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    received: list[tuple[str, int]] = []
    encode = qwen_engine.pipeline.encode_prompt

    def spy(prompt: str, image: list[Image.Image], **kwargs: Any) -> Any:
        received.append((prompt, len(image)))
        return encode(prompt=prompt, image=image, **kwargs)

    monkeypatch.setattr(qwen_engine.pipeline, "encode_prompt", spy)
    elements = (element((10, 200, 10)), element((10, 10, 200)))

    out = qwen_engine.generate(job(prompt="@Element2 hugs @Element1", elements=elements), ignore)

    expected = "the subject of Picture 3 hugs the subject of Picture 2"
    assert received == [(expected, 3), (" ", 3)]  # the prompt, then the negative prompt
    assert out.info["reference_images"] == 2


def test_the_runners_image_numbers_become_picture_numbers() -> None:
    runner = reference_prompt("@Element1 wears the hat of @Element2", [1, 0])
    assert runner == "the subject of image 2 wears the hat of the subject of image 4"
    assert picture_prompt(runner) == (
        "the subject of Picture 2 wears the hat of the subject of Picture 4"
    )
    assert picture_prompt("an image 2 pixels wide") == "an image 2 pixels wide"


def test_more_images_than_capabilities_is_an_error(qwen_engine: QwenImageEditEngine) -> None:
    too_many = (element((1, 1, 1), references=2),)

    with pytest.raises(ValueError, match="max_references 3"):
        qwen_engine.generate(job(elements=too_many), ignore)


def test_cfg_zero_is_one_pass_per_step_and_cfg_changes_the_image(
    qwen_engine: QwenImageEditEngine, forward_calls: Watch
) -> None:
    passes = forward_calls(qwen_engine.pipeline.transformer)
    off = with_cfg(qwen_engine, 0.0).generate(job(), ignore)
    assert passes() == off.info["transformer_passes"] == off.info["steps"] == 2
    assert off.info["guidance_scale"] == 1.0

    default = qwen_engine.generate(job(), ignore)
    assert passes() == 2 + 4
    assert default.info["transformer_passes"] == 2 * default.info["steps"] == 4
    assert default.info["guidance_scale"] == 4.0

    strongest = with_cfg(qwen_engine, 1.0).generate(job(), ignore)
    assert strongest.info["guidance_scale"] == 8.0
    images = [np.asarray(out.image) for out in (off, default, strongest)]
    assert not np.array_equal(images[0], images[1])
    assert not np.array_equal(images[1], images[2])


def test_progress_and_cancel(qwen_engine: QwenImageEditEngine, forward_calls: Watch) -> None:
    values: list[float] = []
    qwen_engine.generate(job(), values.append)
    assert values == [0.5, 1.0]

    passes = forward_calls(qwen_engine.pipeline.transformer)

    def cancel(_: float) -> None:
        raise EngineCancelled

    with pytest.raises(EngineCancelled):
        qwen_engine.generate(job(), cancel)
    assert passes() == 2  # the first step's two guided passes, then nothing


def test_same_seed_same_image(qwen_engine: QwenImageEditEngine) -> None:
    a = qwen_engine.generate(job(), ignore)
    b = qwen_engine.generate(job(), ignore)
    c = qwen_engine.generate(job(seed=4), ignore)

    assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
    assert not np.array_equal(np.asarray(a.image), np.asarray(c.image))


def test_tiny_build_is_deterministic_and_has_the_real_layout(tmp_path: Path) -> None:
    from kinema.engines.tiny import MARKER
    from kinema.engines.tiny_qwen import build_tiny_qwen_image_edit

    def tree(directory: Path) -> dict[str, bytes]:
        files = sorted(path for path in directory.rglob("*") if path.is_file())
        return {str(path.relative_to(directory)): path.read_bytes() for path in files}

    a, b = (
        tree(build_tiny_qwen_image_edit(tmp_path / "a")),
        tree(build_tiny_qwen_image_edit(tmp_path / "b")),
    )
    c = tree(build_tiny_qwen_image_edit(tmp_path / "c", seed=1))

    assert a == b and MARKER in a
    assert {"processor/preprocessor_config.json", "processor/tokenizer.json"} <= a.keys()
    weights = [name for name in a if name.endswith(".safetensors")]
    assert weights and any(a[name] != c[name] for name in weights)


def test_qwens_repository_layout_loads_without_torchvision(
    qwen_engine: QwenImageEditEngine, load_options: LoadOptions, tmp_path: Path
) -> None:
    """Qwen's model_index.json names Qwen2VLProcessor, whose video half needs torchvision; the
    loader never builds it and reads its own processor from processor/ instead."""
    from kinema.engines.presets import QWEN_IMAGE_EDIT
    from kinema.engines.qwen import TINY_SETTINGS, QwenVLImageProcessor, load

    weights = tmp_path / "qwen-image-edit"
    shutil.copytree(load_options.models_dir / "tiny-qwen-image-edit", weights)
    index = json.loads((weights / "model_index.json").read_text())
    index["processor"] = ["transformers", "Qwen2VLProcessor"]
    (weights / "model_index.json").write_text(json.dumps(index))
    video = {"video_processor_type": "Qwen2VLVideoProcessor"}
    (weights / "processor" / "video_preprocessor_config.json").write_text(json.dumps(video))

    engine = load(weights, load_options, QWEN_IMAGE_EDIT.capabilities, TINY_SETTINGS)

    assert isinstance(engine.pipeline.processor, QwenVLImageProcessor)
    assert engine.generate(job(width=64, height=32), ignore).image.size == (64, 32)


def test_missing_production_weights_say_what_to_download(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))

    with pytest.raises(WeightsMissing) as err:
        load_engine("qwen-image-edit", LoadOptions(tmp_path / "models"))

    message = str(err.value)
    assert "hf download Qwen/Qwen-Image-Edit-2511" in message
    assert str(tmp_path / "models" / "qwen-image-edit") in message
