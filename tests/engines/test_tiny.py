"""The tiny-weight builders: deterministic, idempotent, never leave a half-written build."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from kinema.engines.tiny import MARKER, build_key, build_tiny_flux2_klein, build_tiny_ltx2

pytestmark = pytest.mark.engines

Builder = Callable[..., Path]
BUILDERS = [
    pytest.param(build_tiny_ltx2, id="ltx2"),
    pytest.param(build_tiny_flux2_klein, id="flux2"),
]


def tree(directory: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(directory)): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


@pytest.mark.parametrize("build", BUILDERS)
def test_same_seed_same_bytes_other_seed_other_weights(build: Builder, tmp_path: Path) -> None:
    a, b = tree(build(tmp_path / "a")), tree(build(tmp_path / "b"))
    c = tree(build(tmp_path / "c", seed=1))

    assert "model_index.json" in a and MARKER in a
    assert a == b
    weights = [name for name in a if name.endswith(".safetensors")]
    assert weights and any(a[name] != c[name] for name in weights)


@pytest.mark.parametrize("build", BUILDERS)
def test_a_finished_build_is_reused(build: Builder, tmp_path: Path) -> None:
    target = build(tmp_path / "m")
    stamp = (target / "model_index.json").stat().st_mtime_ns

    assert build(tmp_path / "m") == target
    assert (target / "model_index.json").stat().st_mtime_ns == stamp
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no staging dirs left behind


def test_a_foreign_directory_is_not_overwritten(tmp_path: Path) -> None:
    target = tmp_path / "m"
    target.mkdir()
    (target / "weights.bin").write_bytes(b"someone else's")

    with pytest.raises(FileExistsError, match="not a finished tiny build"):
        build_tiny_ltx2(target)
    assert (target / "weights.bin").read_bytes() == b"someone else's"


def test_a_build_made_by_other_code_is_rebuilt_not_loaded(tmp_path: Path) -> None:
    target = build_tiny_ltx2(tmp_path / "m")
    key = (target / MARKER).read_text()
    assert key.startswith("kinema-tiny-build ")
    # What a models dir built before the tiny audio VAE got three levels holds: a marker
    # without a key, and that build's config.
    (target / MARKER).write_text("random weights built locally by kinema.engines.tiny\n")
    config = target / "audio_vae" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "ch_mult": [1]}))

    assert build_tiny_ltx2(tmp_path / "m") == target
    assert (target / MARKER).read_text() == key
    assert json.loads(config.read_text())["ch_mult"] == [1, 1, 1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # the stale build is gone


def test_the_build_key_follows_the_code_that_builds() -> None:
    def elsewhere(_staging: Path) -> None:
        """A writer defined in another module (this test's)."""

    assert build_key(build_tiny_ltx2) == build_key(build_tiny_flux2_klein)  # both in tiny.py
    assert build_key(elsewhere) != build_key(build_tiny_ltx2)
