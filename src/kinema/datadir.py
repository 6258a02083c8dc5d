"""The data directory is private to the user running Kinema.

It holds the server secret (``secret.key``), the database (key hashes, balances, every request)
and the outputs (``files/``): nothing another local user should read. Everything Kinema creates
is owner-only (directories 0700, files 0600) through the process umask, set once at the CLI's
entry; a data directory left readable by an older version is tightened at start-up.
"""

from __future__ import annotations

import os
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
