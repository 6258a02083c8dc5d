"""``scripts/setup`` picks the torch build from ``KINEMA_TORCH``: the CPU build by default (what
CI installs), a CUDA build by name, PyPI's own on request; read from its ``--dry-run``, which
prints the commands and runs none (no CUDA build is ever downloaded here)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.fixtures.served import ROOT

pytestmark = pytest.mark.unit
SETUP = ROOT / "scripts" / "setup"
INDEX = "https://download.pytorch.org/whl"


def _setup(tmp_path: Path, *args: str, system: str = "Linux", **env: str) -> tuple[int, str, str]:
    # A fake uname on PATH plays the platform.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "uname").write_text(f"#!/bin/sh\necho {system}\n")
    (bin_dir / "uname").chmod(0o755)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("KINEMA_TORCH")}
    environ.update(env, PATH=f"{bin_dir}{os.pathsep}{environ['PATH']}")
    done = subprocess.run(
        ["bash", str(SETUP), *args],
        env=environ,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return done.returncode, done.stdout, done.stderr


def _torch_line(stdout: str) -> str:
    (line,) = [line for line in stdout.splitlines() if " torch" in line]
    return line.split("pip install --quiet ", 1)[1]


def test_the_default_is_the_pinned_cpu_build(tmp_path: Path) -> None:
    rc, out, err = _setup(tmp_path, "--dry-run")
    assert rc == 0, err
    assert _torch_line(out) == f"torch==2.13.0+cpu --extra-index-url {INDEX}/cpu"
    # Then the project, at the versions in constraints.txt; nothing is run.
    assert out.splitlines()[-1].endswith(
        "pip install --quiet -c constraints.txt -e .[engines,redis,s3,ray,dev]"
    )
    assert "ready:" not in out


@pytest.mark.parametrize(
    ("env", "want"),
    [
        ({"KINEMA_TORCH": "cpu"}, f"torch==2.13.0+cpu --extra-index-url {INDEX}/cpu"),
        ({"KINEMA_TORCH": "cu128"}, f"torch==2.13.0+cu128 --extra-index-url {INDEX}/cu128"),
        ({"KINEMA_TORCH": "cu126"}, f"torch==2.13.0+cu126 --extra-index-url {INDEX}/cu126"),
        ({"KINEMA_TORCH": "pypi"}, "torch==2.13.0"),
        (
            {"KINEMA_TORCH": "cu128", "KINEMA_TORCH_VERSION": "2.12.1"},
            f"torch==2.12.1+cu128 --extra-index-url {INDEX}/cu128",
        ),
    ],
)
def test_the_switch_names_the_build(tmp_path: Path, env: dict[str, str], want: str) -> None:
    rc, out, err = _setup(tmp_path, "--dry-run", **env)
    assert rc == 0, err
    assert _torch_line(out) == want


def test_macos_takes_pypis_build_and_has_no_cuda(tmp_path: Path) -> None:
    rc, out, _ = _setup(tmp_path, "--dry-run", system="Darwin")
    assert rc == 0 and _torch_line(out) == "torch==2.13.0"
    rc, _, err = _setup(tmp_path, "--dry-run", system="Darwin", KINEMA_TORCH="cu128")
    assert rc == 2 and "no CUDA builds of torch for macOS" in err


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        ((), {"KINEMA_TORCH": "2.13.0"}, "set KINEMA_TORCH_VERSION=2.13.0 for the version"),
        ((), {"KINEMA_TORCH": "rocm"}, "unknown KINEMA_TORCH=rocm; use cpu, cuXYZ"),
        (("--bogus",), {}, "unknown argument --bogus"),
    ],
)
def test_a_wrong_switch_stops_before_anything_runs(
    tmp_path: Path, args: tuple[str, ...], env: dict[str, str], message: str
) -> None:
    rc, out, err = _setup(tmp_path, *args, **env)
    assert rc == 2 and message in err and out == ""


def test_help_describes_the_switch(tmp_path: Path) -> None:
    rc, out, _ = _setup(tmp_path, "--help")
    assert rc == 0 and "KINEMA_TORCH=cu128 scripts/setup" in out and "--dry-run" in out
