"""The storage the settings ask for, as the API process sees it and as a worker does."""

from __future__ import annotations

from kinema.settings import Settings
from kinema.storage.base import Storage
from kinema.storage.local import LocalStorage
from kinema.storage.target import StorageTarget


def open_storage(settings: Settings, secret: bytes) -> Storage:
    return LocalStorage(settings.storage_path, secret)


def storage_target(settings: Settings) -> StorageTarget:
    """What a worker needs to reach the same storage."""
    return StorageTarget(root=str(settings.storage_path.resolve()))
