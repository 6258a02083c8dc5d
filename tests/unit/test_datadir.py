"""The data directory and what Kinema writes into it are owner-only; a command never silently
starts a second, empty database in another directory than a running server's."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from kinema.cli import main
from kinema.datadir import running_servers, servers_dir
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


# -- a command in another directory than the server's ------------------------------------------


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A home directory of its own (where servers record themselves), and a current directory
    with no data directory in it."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("KINEMA_DATA_DIR", raising=False)
    monkeypatch.delenv("KINEMA_CONFIG", raising=False)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    return tmp_path / "home"


@pytest.fixture
def other_server(tmp_path: Path, home: Path) -> Iterator[Path]:
    """A live process recorded as a kinema serve using ``<tmp>/srv/kinema-data``."""
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    data = tmp_path / "srv" / "kinema-data"
    record = {"pid": sleeper.pid, "data_dir": str(data), "url": "http://127.0.0.1:8000"}
    servers_dir().mkdir(parents=True)
    (servers_dir() / f"{sleeper.pid}.json").write_text(json.dumps(record))
    try:
        yield data
    finally:
        sleeper.kill()
        sleeper.wait()


def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def test_a_new_default_database_beside_a_running_server_is_refused_and_explained(
    tmp_path: Path, other_server: Path
) -> None:
    here = tmp_path / "elsewhere" / "kinema-data"
    for command in (["keys", "create"], ["keys", "list"], ["credits", "show", "x"], ["migrate"]):
        code, out = _cli(*command)
        assert code == 1, out
        assert out == (
            f"Error: no database in {here} (the default data directory, ./kinema-data, follows "
            f"the current directory), and the kinema serve at http://127.0.0.1:8000 (pid "
            f"{json.loads(next(servers_dir().glob('*.json')).read_text())['pid']}) uses "
            f"{other_server}: run this from {other_server.parent} or pass --data-dir "
            f"{other_server}; --data-dir kinema-data creates a new database here\n"
        )
    assert not here.exists()  # nothing was created
    # Named explicitly, it is created; from then on the default finds it and is not questioned.
    assert _cli("--data-dir", "kinema-data", "keys", "create")[0] == 0
    assert (here / "kinema.db").exists()
    assert _cli("keys", "list")[0] == 0


def test_the_servers_own_directory_or_an_explicit_choice_is_never_questioned(
    tmp_path: Path, other_server: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other_server.mkdir(parents=True)
    monkeypatch.chdir(other_server.parent)
    assert _cli("keys", "create")[0] == 0  # the server's own directory: its database
    monkeypatch.chdir(tmp_path / "elsewhere")
    monkeypatch.setenv("KINEMA_DATA_DIR", str(tmp_path / "second"))
    assert _cli("keys", "create")[0] == 0
    monkeypatch.delenv("KINEMA_DATA_DIR")
    toml = tmp_path / "k.toml"
    toml.write_text(f'data_dir = "{tmp_path / "third"}"\n')
    assert _cli("--config", str(toml), "keys", "create")[0] == 0


def test_a_record_left_by_a_server_that_is_gone_is_dropped(tmp_path: Path, home: Path) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], **_OUT)
    pid = int(gone.stdout)
    servers_dir().mkdir(parents=True)
    record = servers_dir() / f"{pid}.json"
    record.write_text(json.dumps({"pid": pid, "data_dir": str(tmp_path), "url": "http://x"}))
    assert running_servers() == []
    assert not record.exists()
    assert _cli("keys", "create")[0] == 0


_OUT: dict[str, Any] = {"capture_output": True, "text": True, "check": True}


@pytest.mark.integration  # runs kinema serve
def test_kinema_serve_records_its_data_directory_while_it_runs(tmp_path: Path) -> None:
    env = {**os.environ, "HOME": str(tmp_path / "home")}
    env.pop("KINEMA_DATA_DIR", None)
    data = tmp_path / "srv"
    args = ["--data-dir", str(data), "serve", "--preset", "static", "--port", "0"]
    server = subprocess.Popen(
        [sys.executable, "-m", "kinema", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    record = tmp_path / "home" / ".local" / "state" / "kinema" / "servers" / f"{server.pid}.json"
    try:
        deadline = time.monotonic() + 60
        while not record.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        body = json.loads(record.read_text())
        assert body["pid"] == server.pid and body["data_dir"] == str(data.resolve())
        assert body["url"].startswith("http://127.0.0.1:")
        (tmp_path / "elsewhere").mkdir()
        refused = subprocess.run(
            [sys.executable, "-m", "kinema", "keys", "create"],
            cwd=tmp_path / "elsewhere",
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert refused.returncode == 1 and f"uses {data.resolve()}" in refused.stderr
    finally:
        server.terminate()
        server.wait(timeout=60)
    assert not record.exists()  # removed on the way out
