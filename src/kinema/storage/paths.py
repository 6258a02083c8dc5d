"""Storage keys as local paths (the local backend, and a worker reading it)."""

from __future__ import annotations

import os
from pathlib import Path


def key_path(root: str, key: str) -> Path:
    """The file behind ``key`` under ``root`` (an absolute, resolved directory); raises
    :class:`LookupError` for a key that would escape it. Lexical (no symlink resolution:
    nothing here creates links, and resolving costs a dozen stat calls on every access)."""
    path = os.path.normpath(os.path.join(root, key))
    if not path.startswith(root + os.sep):
        raise LookupError(key)
    return Path(path)
