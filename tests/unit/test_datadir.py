"""The data directory and what Kinema writes into it are owner-only."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from kinema.store.db import open_database
from tests.fixtures.served import ROOT


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.unit
async def test_a_new_sqlite_database_is_owner_only_whatever_the_umask(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        db = open_database(f"sqlite:///{tmp_path / 'new' / 'kinema.db'}")
        await db.migrate()
        await db.dispose()
    finally:
        os.umask(previous)
    assert _mode(tmp_path / "new") == 0o700
    assert _mode(tmp_path / "new" / "kinema.db") == 0o600


@pytest.mark.integration  # runs the CLI
def test_the_cli_creates_and_tightens_the_data_directory(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "files").mkdir(parents=True, mode=0o755)
    (data / "files").chmod(0o755)  # as an older version left them
    (data / "kinema.db").touch(mode=0o644)
    (data / "kinema.db").chmod(0o644)
    subprocess.run(
        [sys.executable, "-m", "kinema", "--data-dir", str(data), "keys", "create"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    )
    assert _mode(data) == 0o700
    assert _mode(data / "files") == 0o700
    for name in ("kinema.db", "secret.key"):
        assert _mode(data / name) == 0o600, name
