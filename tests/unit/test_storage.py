"""The local storage: keys stay under the root, files move in; a worker sees the same objects
by the same keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from kinema.errors import NotFound
from kinema.storage.blobs import PARTIAL_DIR, InputMissing, LocalBlobs
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


def test_a_worker_reads_and_writes_the_same_objects_by_key(
    storage: LocalStorage, tmp_path: Path
) -> None:
    """The worker's view (LocalBlobs) of the API's storage: same keys, same objects; outputs
    arrive whole (built in a scratch file, then stored), and the error for a missing input names
    no path."""
    blobs = LocalBlobs(tmp_path / "files")
    blobs.put_bytes("inputs/j1/00-image", b"in")
    with blobs.open("inputs/j1/00-image") as stream:
        assert stream.read() == b"in"
    scratch = blobs.scratch(".mp4")
    scratch.write_bytes(b"mp4")
    blobs.put_file("outputs/j1/output.mp4", scratch)
    assert not scratch.exists()
    assert storage.path("outputs/j1/output.mp4").read_bytes() == b"mp4"
    assert list((tmp_path / "files" / PARTIAL_DIR).iterdir()) == []
    with pytest.raises(InputMissing):
        blobs.open("inputs/j1/missing")
    with pytest.raises(InputMissing):
        blobs.open("../escape")


async def test_a_missing_file_is_not_named_to_the_client(storage: LocalStorage) -> None:
    with pytest.raises(NotFound) as caught:
        await storage.get_bytes("inputs/j1/00-start_image")
    assert "inputs/" not in caught.value.message
