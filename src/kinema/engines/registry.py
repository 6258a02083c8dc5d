"""Engine presets: a registry of data. The built-in presets register exactly as a third-party one
would (``register(Preset(...))``); adding a model is one module plus one entry here.

A preset's ``loader`` is an import path ``"module:function"`` so that reading capabilities (the API
process does) never imports torch; only the worker calls :func:`load_engine`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path

from kinema.engines.base import Capabilities, Engine, Task
from kinema.engines.catalog import Catalog


@dataclass(frozen=True)
class LoadOptions:
    """How the worker loads weights; built from the ``engines`` settings section."""

    models_dir: Path
    """Local directory holding weights (and where tiny presets build theirs)."""
    device: str = "auto"
    """``auto`` picks CUDA when present, else CPU."""
    dtype: str = "auto"
    """``auto``: bfloat16 on CUDA, float32 on CPU."""
    cpu_offload: bool = False
    vae_tiling: bool = False
    num_inference_steps: int | None = None
    """Override the preset's step count (tests use 2)."""
    source: str | None = None
    """Hub id or local directory overriding the preset's default weights location."""


@dataclass(frozen=True)
class Resources:
    """What one worker of a preset needs, as data, for placement."""

    gpus: int = 1
    """GPUs per worker (0: CPU only, GPUs hidden from it). Several: the model is sharded."""
    memory_gib: float = 0.0
    """Estimated peak GPU memory of the preset loaded and running at its largest working size,
    weights included (spread evenly over its GPUs)."""
    offload_memory_gib: float | None = None
    """The same with ``engines.cpu_offload`` (weights in host memory, moved per component).
    None: as ``memory_gib``."""

    def peak_gib(self, *, cpu_offload: bool) -> float:
        if cpu_offload and self.offload_memory_gib is not None:
            return self.offload_memory_gib
        return self.memory_gib


@dataclass(frozen=True)
class Preset:
    name: str
    capabilities: Capabilities
    loader: str
    """``"package.module:function"`` taking :class:`LoadOptions` and returning an engine."""
    description: str = ""
    license: str = ""
    weights: str = ""
    """Where the weights come from (hub id), for docs and the missing-weights message."""
    tags: frozenset[str] = field(default_factory=frozenset)
    resources: Resources = Resources()
    needs: tuple[Task, ...] | None = None
    """Other tasks whose configured engine the preset's workers load as well. None: derived
    from the capabilities — a video engine that takes no reference images composes elements
    into its first frame with the image engine, so it needs that one."""

    @property
    def required_tasks(self) -> tuple[Task, ...]:
        """:attr:`needs`, or what the capabilities imply."""
        if self.needs is not None:
            return self.needs
        composes = self.task is Task.IMAGE_TO_VIDEO and self.capabilities.max_references == 0
        return (Task.IMAGE_TO_IMAGE,) if composes else ()

    @property
    def task(self) -> Task:
        return self.capabilities.task


_CATALOG: Catalog[Preset, Engine] = Catalog("engine preset")


def register(preset: Preset) -> Preset:
    return _CATALOG.add(preset)


def get_preset(name: str) -> Preset:
    _ensure_builtins()
    return _CATALOG.get(name)


def presets() -> list[Preset]:
    _ensure_builtins()
    return _CATALOG.all()


def load_engine(name: str, options: LoadOptions) -> Engine:
    """Import the preset's module and build the engine. Worker process only."""
    _ensure_builtins()
    return _CATALOG.load(name, options)


def load_plugins(modules: list[str]) -> None:
    """Import third-party preset modules (settings ``engines.plugins``); importing registers."""
    _ensure_builtins()
    for module in modules:
        importlib.import_module(module)


def _ensure_builtins() -> None:
    # Importing the module registers the built-in presets through register().
    importlib.import_module("kinema.engines.presets")
