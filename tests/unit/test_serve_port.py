"""``kinema serve`` binds its port before anything loads: a port in use is one line and a
non-zero exit at once, not an error after the engines have loaded (minutes with real weights)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

import kinema.api.app
import kinema.api.serving
from kinema.cli import main
from tests.fixtures.served import ROOT

pytestmark = pytest.mark.unit


@pytest.fixture
def taken() -> Iterator[int]:
    """A port on 127.0.0.1 that another process is listening on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_a_port_in_use_is_one_line_before_the_app_is_built(
    tmp_path: Path, taken: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    def never(*_: object, **__: object) -> None:
        raise AssertionError("the app was built although the port is taken")

    monkeypatch.setattr(kinema.api.app, "create_app", never)
    monkeypatch.setattr(kinema.api.serving.Server, "run", never)
    args = ["--data-dir", str(tmp_path / "data"), "serve", "--port", str(taken)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    assert result.output == (
        f"Error: port {taken} on 127.0.0.1 is already in use (another kinema serve?); "
        "stop that process or choose another port with --port\n"
    )
    assert not (tmp_path / "data").exists()  # nothing was created either


def test_the_command_exits_non_zero_at_once(tmp_path: Path, taken: int) -> None:
    # The real command, as a user runs it: no traceback, no engine loading, well under a second
    # of work (the timeout only bounds a regression).
    args = ["--data-dir", str(tmp_path), "serve", "--port", str(taken)]
    done = subprocess.run(
        [sys.executable, "-m", "kinema", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"Error: port {taken} on 127.0.0.1 is already in use (another kinema serve?); "
        "stop that process or choose another port with --port"
    ]


def test_an_address_not_of_this_machine_is_one_line_too(tmp_path: Path) -> None:
    args = ["--data-dir", str(tmp_path), "serve", "--host", "192.0.2.1", "--port", "0"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    assert result.output.startswith("Error: cannot listen on 192.0.2.1:0: ")
    assert result.output.count("\n") == 1


def test_the_listening_socket_does_not_reach_the_engine_workers() -> None:
    """Workers are started from uvicorn's loop (uvloop, which keeps inheritable descriptors in
    a child): were the socket inheritable, a killed server's workers would hold its port until
    they noticed and a restart would find it in use."""
    import asyncio

    import uvloop

    sock = kinema.api.serving.listen_socket("127.0.0.1", 0)
    code = "import os; print(sorted(os.readlink(f'/proc/self/fd/{f}') for f in os.listdir('/proc/self/fd') if os.path.exists(f'/proc/self/fd/{f}')))"  # noqa: E501

    async def child_fds() -> str:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE
        )
        out, _ = await proc.communicate()
        return out.decode()

    with sock:
        seen = uvloop.run(child_fds())
        inode = os.readlink(f"/proc/self/fd/{sock.fileno()}")
    assert inode.startswith("socket:[") and inode not in seen
