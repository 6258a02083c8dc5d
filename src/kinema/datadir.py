"""The data directory is private to the user running Kinema.

It holds the server secret (``secret.key``), the database (key hashes, balances, every request)
and the outputs (``files/``): nothing another local user should read. Everything Kinema creates
is owner-only (directories 0700, files 0600) through the process umask, set once at the CLI's
entry; a data directory left readable by an older version is tightened at start-up.

The default data directory is relative (``./kinema-data``); :func:`stray_default` keeps a
command from silently starting a second, empty database in another directory than a running
server's.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

UMASK = 0o077
EXISTING = ("kinema.db", "kinema.db-wal", "kinema.db-shm", "secret.key", "files", "work")
"""What earlier versions created with the default umask (0644 files, 0755 directories)."""


def make_private(data_dir: Path) -> None:
    """Set the process umask to owner-only, create ``data_dir`` 0700 and tighten what is
    already in it (only what this user owns: another owner's files are left to their owner)."""
    os.umask(UMASK)
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    for path in (data_dir, *(data_dir / name for name in EXISTING)):
        _tighten(path)


def _tighten(path: Path) -> None:
    try:
        info = path.lstat()
    except FileNotFoundError:
        return
    if info.st_uid != os.geteuid() or path.is_symlink():
        return
    mode = info.st_mode & 0o777
    if mode & 0o077:
        path.chmod(mode & 0o700)


# -- which data directory the running servers use ---------------------------------------------
#
# The default data directory (``./kinema-data``) is relative, so it follows the current
# directory: `kinema keys create` run elsewhere than the server would make a key in a new,
# empty database that no server reads. Each `kinema serve` records the directory it uses in a
# per-user file; a command about to create a new default database while a server uses another
# one stops and names it (:func:`stray_default`).


@dataclass(frozen=True)
class RunningServer:
    """A `kinema serve` of this user, as it recorded itself."""

    pid: int
    data_dir: Path
    url: str


def servers_dir() -> Path:
    """Where running servers record themselves: ``~/.local/state/kinema/servers`` (per user)."""
    return Path.home() / ".local" / "state" / "kinema" / "servers"


def announce(data_dir: Path, url: str) -> Callable[[], None]:
    """Record this process as a server using ``data_dir`` at ``url``; returns the function that
    removes the record (at exit; a record left by a killed server is dropped when read)."""
    folder = servers_dir()
    record = folder / f"{os.getpid()}.json"
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        body = {"pid": os.getpid(), "data_dir": str(data_dir.resolve()), "url": url}
        record.write_text(json.dumps(body))
    except OSError:  # a read-only or missing home: the check is advice, never a failure
        return lambda: None
    return lambda: record.unlink(missing_ok=True)


def running_servers() -> list[RunningServer]:
    """This user's running servers (records of processes that are gone are removed)."""
    found: list[RunningServer] = []
    for record in sorted(servers_dir().glob("*.json")):
        try:
            body = json.loads(record.read_text())
            server = RunningServer(int(body["pid"]), Path(body["data_dir"]), str(body["url"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if _alive(server.pid):
            found.append(server)
        else:
            record.unlink(missing_ok=True)
    return found


def stray_default(data_dir: Path) -> str | None:
    """Why a command should not create a new database in the default ``data_dir``: a message
    when it holds no database yet and a running server uses another directory, else None."""
    here = data_dir.resolve()
    if (here / "kinema.db").exists():
        return None
    others = [s for s in running_servers() if s.data_dir != here and s.pid != os.getpid()]
    if not others:
        return None
    server = others[0]
    return (
        f"no database in {here} (the default data directory, ./kinema-data, follows the "
        f"current directory), and the kinema serve at {server.url} (pid {server.pid}) uses "
        f"{server.data_dir}: run this from {server.data_dir.parent} or pass --data-dir "
        f"{server.data_dir}; --data-dir {data_dir} creates a new database here"
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True
