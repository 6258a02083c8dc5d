"""The local storage: keys stay under the root, files move in, a job's prepared folder is
removed again only while it is empty."""

from __future__ import annotations

from pathlib import Path

import pytest

from kinema.errors import NotFound
from kinema.storage.local import LocalStorage

pytestmark = pytest.mark.unit


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "files", b"secret")


async def test_files_move_in_and_read_back(storage: LocalStorage, tmp_path: Path) -> None:
    src = tmp_path / "out.png"
    src.write_bytes(b"png")
    await storage.put_file("outputs/j1/output.png", src, "image/png")
    assert not src.exists()  # moved, not copied
    assert await storage.get_bytes("outputs/j1/output.png") == b"png"
    with pytest.raises(NotFound):
        await storage.get_bytes("outputs/j1/missing.png")
    with pytest.raises(NotFound):
        storage.path("../escape")


async def test_unprepare_removes_only_an_empty_prepared_folder(storage: LocalStorage) -> None:
    await storage.prepare("outputs/j1")
    assert storage.path("outputs/j1").is_dir()
    await storage.unprepare("outputs/j1")
    assert not storage.path("outputs/j1").exists()
    await storage.unprepare("outputs/j1")  # already gone: nothing to do

    await storage.prepare("outputs/j2")
    await storage.put_bytes("outputs/j2/output.png", b"stored by a retry", "image/png")
    await storage.unprepare("outputs/j2")
    assert await storage.get_bytes("outputs/j2/output.png") == b"stored by a retry"
