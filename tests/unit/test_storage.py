"""The local storage: keys stay under the root, files move in; a worker sees the same objects
by the same keys. The S3 settings, and what a worker is told of the bucket (the storage
contract itself runs against both backends in tests/services/test_s3.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kinema.errors import NotFound
from kinema.runners.factory import worker_config
from kinema.settings import SettingsError, load_settings
from kinema.storage.blobs import PARTIAL_DIR, InputMissing, LocalBlobs
from kinema.storage.factory import storage_target, worker_environment
from kinema.storage.local import LocalStorage
from kinema.storage.target import LocalTarget, S3Target

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


# S3 settings and what a worker is told ----------------------------------------------------------

S3 = {"backend": "s3", "bucket": "media", "endpoint_url": "http://127.0.0.1:8333"}


def test_s3_settings_refuse_what_cannot_work() -> None:
    with pytest.raises(
        SettingsError, match=r'^setting storage.bucket: .*"s3" needs storage.bucket'
    ):
        load_settings(storage={"backend": "s3"})
    with pytest.raises(SettingsError, match=r"^setting storage.access_key_id: .* together") as pair:
        load_settings(storage={**S3, "secret_access_key": "very-secret"})
    assert "very-secret" not in str(pair.value)  # the error names the key ID, never the secret
    with pytest.raises(SettingsError, match=r"^setting storage.url_ttl_s: .* at most 604800 s"):
        load_settings(storage={**S3, "url_ttl_s": 8 * 86_400})
    assert load_settings(storage={"url_ttl_s": 8 * 86_400}).storage.url_ttl_s == 8 * 86_400
    with pytest.raises(SettingsError, match=r"^setting storage.prefix: .* without empty"):
        load_settings(storage={**S3, "prefix": "a//b"})
    assert (
        load_settings(storage={**S3, "prefix": "/kinema/media/"}).storage.prefix == "kinema/media"
    )


def test_a_worker_is_told_where_the_bucket_is_and_gets_the_credentials_in_its_environment(
    tmp_path: Path,
) -> None:
    settings = load_settings(
        data_dir=tmp_path,
        storage={
            **S3,
            "prefix": "kinema",
            "region": "eu-west-1",
            "access_key_id": "AKIDEXAMPLE",
            "secret_access_key": "very-secret",
        },
    )
    config = worker_config(settings)
    assert config.storage == S3Target(
        bucket="media", endpoint_url="http://127.0.0.1:8333", prefix="kinema", region="eu-west-1"
    )
    assert "very-secret" not in config.model_dump_json()  # the worker's command line
    assert worker_environment(settings) == {
        "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
        "AWS_SECRET_ACCESS_KEY": "very-secret",
    }
    # Without credentials in the settings the worker inherits the AWS environment as it is.
    assert worker_environment(load_settings(data_dir=tmp_path, storage=S3)) == {}
    assert worker_environment(load_settings(data_dir=tmp_path)) == {}
    local = storage_target(load_settings(data_dir=tmp_path))
    assert local == LocalTarget(root=str((tmp_path / "files").resolve()))
