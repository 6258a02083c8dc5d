"""The storage the settings ask for, as the API process sees it and as a worker does."""

from __future__ import annotations

from kinema.settings import Settings, SettingsError
from kinema.storage.base import Storage
from kinema.storage.local import LocalStorage
from kinema.storage.target import S3_EXTRA, LocalTarget, S3Target, StorageTarget


def open_storage(settings: Settings, secret: bytes) -> Storage:
    """The API side's storage; raises :class:`~kinema.settings.SettingsError` when the S3
    client is not installed or refuses the settings."""
    if settings.storage.backend == "s3":
        try:
            # Imported here: the S3 client is an optional extra that local storage does not need.
            from kinema.storage.s3 import S3Location, S3Storage
        except ModuleNotFoundError as exc:
            if exc.name != "obstore":
                raise
            raise SettingsError(S3_EXTRA) from exc
        return S3Storage(S3Location.from_settings(settings.storage))
    return LocalStorage(settings.storage_path, secret)


def storage_target(settings: Settings) -> StorageTarget:
    """What a worker needs to reach the same storage (no secrets: see
    :mod:`kinema.storage.target`)."""
    storage = settings.storage
    if storage.backend == "s3":
        assert storage.bucket is not None  # the settings refuse backend s3 without one
        return S3Target(
            bucket=storage.bucket,
            endpoint_url=storage.endpoint_url,
            prefix=storage.prefix,
            region=storage.region,
        )
    return LocalTarget(root=str(settings.storage_path.resolve()))


def worker_environment(settings: Settings) -> dict[str, str]:
    """Environment variables a worker process needs on top of its parent's: the S3 credentials
    the settings give, under the names the worker's S3 client reads (the standard AWS ones).
    They travel in the environment, which only the worker's user can read, never on its
    command line with the rest of its configuration. Empty when the settings give none (the
    worker then inherits the same AWS environment as the API process)."""
    storage = settings.storage
    if storage.backend != "s3" or storage.secret_access_key is None:
        return {}
    assert storage.access_key_id is not None  # the settings require the pair
    return {
        "AWS_ACCESS_KEY_ID": storage.access_key_id,
        "AWS_SECRET_ACCESS_KEY": storage.secret_access_key.get_secret_value(),
    }
