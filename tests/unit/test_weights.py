"""Production presets find their weights before loading, or stop with what to download."""

from __future__ import annotations

from pathlib import Path

import pytest

from kinema.engines.registry import LoadOptions, get_preset
from kinema.engines.weights import WeightsMissing, resolve

pytestmark = pytest.mark.unit


def test_missing_weights_say_what_to_download_and_where(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(WeightsMissing) as err:
        resolve("flux2-klein-4b", "black-forest-labs/FLUX.2-klein-4B", LoadOptions(tmp_path))
    message = str(err.value)
    assert "hf download black-forest-labs/FLUX.2-klein-4B" in message
    assert str(tmp_path / "flux2-klein-4b") in message


def test_local_directory_then_explicit_source(tmp_path: Path) -> None:
    local = tmp_path / "ltx2.5-distilled"
    local.mkdir()
    (local / "model_index.json").write_text("{}")
    assert resolve("ltx2.5-distilled", "org/x", LoadOptions(tmp_path)) == str(local)
    explicit = LoadOptions(tmp_path, source="/srv/weights/ltx")
    assert resolve("ltx2.5-distilled", "org/x", explicit) == "/srv/weights/ltx"


def test_production_presets_are_registered_with_their_weights() -> None:
    assert get_preset("ltx2.5-distilled").weights == "Lightricks/LTX-2.5-Diffusers"
    assert get_preset("ltx2.5-quality").capabilities.honours_cfg
    assert get_preset("flux2-klein-4b").capabilities.max_references == 10
