"""The engine registry and the built-in presets (as data: nothing here imports torch)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kinema.engines import registry
from kinema.engines.base import Capabilities, PhaseShares, Task
from kinema.engines.registry import LoadOptions, Preset, get_preset, load_engine, presets, register

pytestmark = pytest.mark.unit

BUILTINS = {"tiny-ltx2", "tiny-flux2-klein", "static-video", "static-image"}


@pytest.fixture
def scratch_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registrations made by a test vanish with it."""
    presets()  # load the built-ins into the real table first
    monkeypatch.setattr(registry._CATALOG, "_presets", dict(registry._CATALOG._presets))


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(KeyError, match=r"unknown engine preset 'nope' \(known: .*static-image"):
        get_preset("nope")


@pytest.mark.usefixtures("scratch_registry")
def test_registering_a_name_twice_is_an_error() -> None:
    preset = Preset("unit-test-preset", Capabilities(task=Task.IMAGE_TO_IMAGE), "some.module:load")
    register(preset)

    with pytest.raises(ValueError, match="already registered"):
        register(preset)
    with pytest.raises(ValueError, match="already registered"):
        register(Preset("tiny-ltx2", preset.capabilities, "x:y"))
    assert get_preset("unit-test-preset") is preset


@pytest.mark.usefixtures("scratch_registry")
def test_loader_must_be_module_colon_function() -> None:
    with pytest.raises(ValueError, match="module:function"):
        register(Preset("bad-loader", Capabilities(task=Task.IMAGE_TO_IMAGE), "some.module.load"))


def test_builtin_presets_are_registered_with_their_capabilities() -> None:
    by_name = {p.name: p for p in presets()}

    assert set(by_name) >= BUILTINS
    ltx2 = by_name["tiny-ltx2"].capabilities
    assert (ltx2.task, ltx2.audio, ltx2.frame_grid, ltx2.size_multiple) == (
        Task.IMAGE_TO_VIDEO,
        True,
        8,
        32,
    )
    assert ltx2.max_frames == 361 and not ltx2.honours_cfg
    assert by_name["tiny-flux2-klein"].task is Task.IMAGE_TO_IMAGE
    assert by_name["tiny-flux2-klein"].capabilities.max_references == 13
    assert by_name["static-video"].capabilities.audio
    for name in BUILTINS:
        preset = by_name[name]
        assert preset.description and preset.license and preset.weights, name
        assert preset.loader.startswith("kinema.engines."), name


def test_every_builtin_preset_declares_where_its_time_goes() -> None:
    """Progress shares are chosen per preset (measured or estimated), never the default; an
    image run has no decoding phase, so an image preset gives it nothing."""
    builtin = [p for p in presets() if p.loader.startswith("kinema.engines.")]
    assert len(builtin) >= 11
    for preset in builtin:
        shares = preset.capabilities.phase_shares
        assert shares != PhaseShares(), preset.name
        if preset.capabilities.task is Task.IMAGE_TO_IMAGE:
            assert shares.decoding == 0.0, preset.name
    with pytest.raises(ValueError, match="sum to 1"):
        PhaseShares(loading=0.5, denoising=0.6, decoding=0.0, encoding=0.0, storing=0.0)


def test_load_engine_builds_from_the_loader(tmp_path: Path) -> None:
    engine = load_engine("static-image", LoadOptions(models_dir=tmp_path))

    assert engine.capabilities is get_preset("static-image").capabilities


def test_reading_presets_imports_neither_torch_nor_diffusers() -> None:
    code = (
        "import sys\n"
        "import kinema.engines.presets, kinema.engines.registry\n"
        "kinema.engines.registry.presets()\n"
        "print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )

    assert result.stdout.strip() == "[]"
