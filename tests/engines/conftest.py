"""Tiny engines built once per session: random weights of the real architectures, written with
``save_pretrained`` into a temp models dir and loaded back through the presets' loaders (the same
``from_pretrained`` path real weights take)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import pytest
from PIL import Image

from kinema.engines.base import VideoJob
from kinema.engines.registry import LoadOptions, load_engine

if TYPE_CHECKING:
    import torch

    from kinema.engines.flux2 import Flux2KleinEngine
    from kinema.engines.ltx2 import LTX2Engine

STEPS = 2

RED, BLUE = (220, 30, 30), (30, 30, 220)
Watch = Callable[["torch.nn.Module"], Callable[[], int]]
"""The ``forward_calls`` fixture: watch a module, then read how many times it ran."""


def video_job(**overrides: Any) -> VideoJob:
    """A 5 s 16:9 request from a red start image; ``overrides`` replace fields."""
    base = VideoJob(
        prompt="a cat walks in the park",
        negative_prompt="",
        start_image=Image.new("RGB", (640, 360), RED),
        width=1920,
        height=1080,
        num_frames=120,  # 5 s at 24 fps
        fps=24,
        seed=7,
    )
    return replace(base, **overrides)


def ignore(_: float) -> None:
    """A progress callback that ignores progress."""


@pytest.fixture(scope="session")
def load_options(tmp_path_factory: pytest.TempPathFactory) -> LoadOptions:
    return LoadOptions(
        models_dir=tmp_path_factory.mktemp("models"), device="cpu", num_inference_steps=STEPS
    )


@pytest.fixture(scope="session")
def ltx2_engine(load_options: LoadOptions) -> LTX2Engine:
    from kinema.engines.ltx2 import LTX2Engine

    engine = load_engine("tiny-ltx2", load_options)
    assert isinstance(engine, LTX2Engine)
    return engine


@pytest.fixture(scope="session")
def ltx2_two_stage_engine(load_options: LoadOptions) -> LTX2Engine:
    from kinema.engines.ltx2 import LTX2Engine

    engine = load_engine("tiny-ltx2-two-stage", load_options)
    assert isinstance(engine, LTX2Engine)
    return engine


@pytest.fixture(scope="session")
def flux2_engine(load_options: LoadOptions) -> Flux2KleinEngine:
    from kinema.engines.flux2 import Flux2KleinEngine

    engine = load_engine("tiny-flux2-klein", load_options)
    assert isinstance(engine, Flux2KleinEngine)
    return engine


@pytest.fixture
def forward_calls() -> Iterator[Callable[[torch.nn.Module], Callable[[], int]]]:
    """Count a module's forward calls with a hook of the test's own (removed afterwards)."""
    handles = []

    def watch(module: torch.nn.Module) -> Callable[[], int]:
        calls: list[object] = []
        handles.append(module.register_forward_hook(lambda *args: calls.append(args)))
        return lambda: len(calls)

    yield watch
    for handle in handles:
        handle.remove()
