"""``kinema keys``: unknown model slugs are refused, the list is a table with a header, scopes
and rate limits, and the prefix it shows names the key in the other commands."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from kinema.cli import main

pytestmark = pytest.mark.unit


def _kinema(data: Path, *args: str, code: int = 0) -> str:
    result = CliRunner().invoke(main, ["--data-dir", str(data), *args])
    assert result.exit_code == code, result.output
    return result.output


def test_a_key_for_an_unknown_model_is_refused(tmp_path: Path) -> None:
    out = _kinema(tmp_path, "keys", "create", "--model", "kling-3-img2img", code=2)
    assert "unknown model 'kling-3-img2img'" in out and "kling-3-image2image" in out
    assert "kling-create-voice" in out
    key = _kinema(tmp_path, "keys", "create", "--model", "kling-create-voice").splitlines()[0]
    assert key.startswith("kin_")


def test_keys_list_is_a_table_and_its_prefix_names_the_key(tmp_path: Path) -> None:
    _kinema(tmp_path, "keys", "create", "--name", "me", "--credits", "3")
    _kinema(
        tmp_path,
        "keys",
        "create",
        "--name",
        "ci",
        "--model",
        "kling-3-image2image",
        "--rate-limit",
        "5/minute",
    )
    lines = _kinema(tmp_path, "keys", "list").splitlines()
    assert lines[0].split() == [
        "ID", "PREFIX", "NAME", "CREDITS", "MODELS", "RATE", "LIMIT", "STATE", "CREATED",
    ]  # fmt: skip
    me, ci = (line.split() for line in lines[1:])
    assert me[2:5] == ["me", "3.0000", "all"] and me[5] == "default"
    assert ci[2:6] == ["ci", "0.0000", "kling-3-image2image", "5/minute"]
    prefix = me[1]
    assert prefix.endswith("…")
    assert _kinema(tmp_path, "credits", "add", prefix, "2").strip() == "5"
    assert _kinema(tmp_path, "credits", "show", prefix.removesuffix("…")).strip() == "5"
    _kinema(tmp_path, "keys", "revoke", prefix)
    assert "revoked" in _kinema(tmp_path, "keys", "list").splitlines()[1]
