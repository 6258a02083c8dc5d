"""FLUX.2 klein engine on tiny random weights: real pipeline, sizes, references and code paths."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import torch
from diffusers.models.transformers.transformer_flux2 import Flux2Transformer2DModel
from diffusers.pipelines.flux2.pipeline_flux2_klein import Flux2KleinPipeline
from PIL import Image

from kinema.engines.base import Element, EngineCancelled, ImageJob, ImageToImageEngine
from kinema.engines.flux2 import Flux2KleinEngine

pytestmark = pytest.mark.engines

Watch = Callable[[torch.nn.Module], Callable[[], int]]


def job(**overrides: Any) -> ImageJob:
    base = ImageJob(
        prompt="make it night",
        image=Image.new("RGB", (640, 480), (200, 120, 40)),
        width=1920,
        height=1080,
        seed=3,
    )
    return replace(base, **overrides)


def element(color: tuple[int, int, int], references: int = 3) -> Element:
    image = Image.new("RGB", (300, 400), color)
    return Element(frontal=image, references=(image,) * references)


def ignore(_: float) -> None:
    pass


def test_loads_the_real_pipeline_through_from_pretrained(flux2_engine: Flux2KleinEngine) -> None:
    assert isinstance(flux2_engine, ImageToImageEngine)
    assert isinstance(flux2_engine.pipeline, Flux2KleinPipeline)
    assert isinstance(flux2_engine.pipeline.transformer, Flux2Transformer2DModel)
    assert flux2_engine.pipeline.config.is_distilled


@pytest.mark.parametrize(
    ("width", "height", "expected"),
    [
        (1920, 1080, (64, 32)),
        (1080, 1920, (32, 64)),
        (1080, 1080, (64, 64)),
        (1440, 1080, (64, 48)),
    ],
)
def test_renders_at_the_working_size(
    flux2_engine: Flux2KleinEngine, width: int, height: int, expected: tuple[int, int]
) -> None:
    out = flux2_engine.generate(job(width=width, height=height), ignore)

    assert out.image.mode == "RGB"
    assert out.image.size == expected
    assert out.info["working_size"] == list(expected)


def test_source_and_every_element_image_reach_the_pipeline(
    flux2_engine: Flux2KleinEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    received: list[list[torch.Tensor]] = []
    prepare = flux2_engine.pipeline.prepare_image_latents

    def spy(images: list[torch.Tensor], *args: Any, **kwargs: Any) -> Any:
        received.append(images)
        return prepare(images, *args, **kwargs)

    monkeypatch.setattr(flux2_engine.pipeline, "prepare_image_latents", spy)
    elements = (element((10, 200, 10)), element((10, 10, 200), references=1), element((9, 9, 9)))

    out = flux2_engine.generate(job(elements=elements), ignore)

    assert [len(images) for images in received] == [1 + 4 + 2 + 4]
    assert out.info["reference_images"] == 10
    # Every condition image meets the pipeline's 64-pixel minimum and the 16-pixel grid.
    assert all(min(t.shape[-2:]) >= 64 and t.shape[-1] % 16 == 0 for t in received[0])


def test_more_images_than_capabilities_is_an_error(flux2_engine: Flux2KleinEngine) -> None:
    too_many = (element((1, 1, 1)),) * 3 + (element((2, 2, 2), references=0),)

    with pytest.raises(ValueError, match="max_references 13"):
        flux2_engine.generate(job(elements=too_many), ignore)


def test_exactly_one_transformer_pass_per_step(
    flux2_engine: Flux2KleinEngine, forward_calls: Watch
) -> None:
    passes = forward_calls(flux2_engine.pipeline.transformer)

    out = flux2_engine.generate(job(elements=(element((5, 5, 5)),)), ignore)

    assert passes() == flux2_engine.steps == 2
    assert out.info["transformer_passes"] == out.info["steps"] == 2


def test_progress_and_cancel(flux2_engine: Flux2KleinEngine, forward_calls: Watch) -> None:
    values: list[float] = []
    flux2_engine.generate(job(), values.append)
    assert values == [0.5, 1.0]

    passes = forward_calls(flux2_engine.pipeline.transformer)

    def cancel(_: float) -> None:
        raise EngineCancelled

    with pytest.raises(EngineCancelled):
        flux2_engine.generate(job(), cancel)
    assert passes() == 1


def test_same_seed_same_image(flux2_engine: Flux2KleinEngine) -> None:
    a = flux2_engine.generate(job(), ignore)
    b = flux2_engine.generate(job(), ignore)
    c = flux2_engine.generate(job(seed=4), ignore)

    assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
    assert not np.array_equal(np.asarray(a.image), np.asarray(c.image))
