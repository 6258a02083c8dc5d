"""S3-compatible storage (AWS S3, SeaweedFS, MinIO, R2, …) through obstore: the API side's
:class:`S3Storage` (async) and a worker's :class:`S3Blobs` (blocking), naming the same objects
by the same keys under the configured prefix.

Clients download outputs straight from the bucket through presigned URLs; the API never relays
them. Every store error is translated here: a missing object is :class:`~kinema.errors.NotFound`
(a worker's input: :class:`~kinema.storage.blobs.InputMissing`), anything else the store or the
network does is :class:`~kinema.errors.StorageUnavailable` naming the bucket and what went wrong.
"""

from __future__ import annotations

import contextlib
import io
import logging
import mimetypes
import os
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import obstore
from obstore.exceptions import BaseError as ObstoreError
from obstore.exceptions import PermissionDeniedError, UnauthenticatedError
from obstore.store import S3Store

from kinema.errors import NotFound, StorageUnavailable
from kinema.settings import SettingsError, StorageSettings
from kinema.storage.blobs import InputMissing
from kinema.storage.target import S3Target

if TYPE_CHECKING:
    from obstore.store import ClientConfig, RetryConfig, S3Config

log = logging.getLogger(__name__)

_STORE_ERRORS = (ObstoreError, OSError)
"""What the library raises (a missing object is a FileNotFoundError, caught before these)."""

_GONE = "the file is not stored (it may have expired)"  # as the local storage says it

MULTIPART_THRESHOLD = 8 * 1024 * 1024
"""Objects from this size up are uploaded in parts: below it one PUT is one round trip (a
multipart upload costs at least three), above it parts go up concurrently and a failed part is
retried alone instead of the whole video. 8 MiB is the AWS CLI's threshold too."""

PART_SIZE = 8 * 1024 * 1024
"""Above S3's 5 MiB minimum part; S3's 10,000 parts then allow objects up to ~80 GB."""

PART_CONCURRENCY = 4
"""Parts in flight per upload: enough to fill a link, few enough that a worker's upload does
not hold many 8 MiB buffers at once."""

CONNECT_TIMEOUT = timedelta(seconds=5)
REQUEST_TIMEOUT = timedelta(seconds=120)
"""One request moves a whole object (the v1 path reads a video's output in one GET); the
library's 30 s default is short for a large video over a slow link."""

RETRIES: RetryConfig = {
    "max_retries": 3,
    "retry_timeout": timedelta(seconds=20),
    "backoff": {"init_backoff": timedelta(milliseconds=100), "max_backoff": timedelta(seconds=5)},
}
"""An unreachable store is reported within seconds (a sync request is waiting on it), not after
the library's default of 10 retries over 3 minutes."""


class S3Location:
    """A bucket, where it is and the prefix inside it; builds the client and translates its
    errors (both sides share it)."""

    def __init__(
        self,
        bucket: str,
        *,
        endpoint_url: str | None = None,
        prefix: str = "",
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
    ) -> None:
        self.bucket = bucket
        self.endpoint_url = endpoint_url
        self.prefix = prefix.strip("/")
        config: S3Config = {}
        if endpoint_url:
            config["endpoint"] = endpoint_url
        if region:
            config["region"] = region
        if access_key_id is not None and secret_access_key is not None:
            config["access_key_id"] = access_key_id
            config["secret_access_key"] = secret_access_key
        # Unset values come from the AWS_* environment, read by the library as AWS tools do.
        options: ClientConfig = {"connect_timeout": CONNECT_TIMEOUT, "timeout": REQUEST_TIMEOUT}
        if endpoint_url and endpoint_url.startswith("http://"):
            options["allow_http"] = True  # a server on a private network (SeaweedFS, MinIO)
        try:
            self.store = S3Store(
                bucket, config=config, client_options=options, retry_config=RETRIES
            )
        except (ObstoreError, ValueError) as exc:
            raise SettingsError(
                f"storage: cannot use S3 bucket {bucket!r}: {_first_line(exc)}"
            ) from exc

    @classmethod
    def from_settings(cls, settings: StorageSettings) -> S3Location:
        assert settings.bucket is not None  # the settings refuse backend s3 without one
        secret = settings.secret_access_key
        return cls(
            settings.bucket,
            endpoint_url=settings.endpoint_url,
            prefix=settings.prefix,
            region=settings.region,
            access_key_id=settings.access_key_id,
            secret_access_key=None if secret is None else secret.get_secret_value(),
        )

    @classmethod
    def from_target(cls, target: S3Target) -> S3Location:
        return cls(
            target.bucket,
            endpoint_url=target.endpoint_url,
            prefix=target.prefix,
            region=target.region,
        )

    def path(self, key: str) -> str:
        """The object's name in the bucket; raises :class:`LookupError` for a key the store
        cannot name (an empty or ``..`` segment), as a local key that escapes its root."""
        path = f"{self.prefix}/{key}" if self.prefix else key
        if any(part in ("", ".", "..") for part in path.split("/")):
            raise LookupError(key)
        return path

    def unavailable(self, exc: Exception, doing: str) -> StorageUnavailable:
        """What a store failure means, in one line that names the bucket and the cause."""
        where = f"S3 bucket {self.bucket!r}" + (
            f" at {self.endpoint_url}" if self.endpoint_url else ""
        )
        detail = str(exc)
        if isinstance(exc, PermissionDeniedError | UnauthenticatedError):
            message = f"{where} refused to {doing}: check the storage credentials and the policy"
        elif "NoSuchBucket" in detail:
            message = f"{where} does not exist"
        else:
            message = f"cannot {doing} {where}: {_cause(detail)}"
        log.warning("storage: %s (%s)", message, _first_line(exc))
        return StorageUnavailable(message)


def _first_line(exc: BaseException) -> str:
    return str(exc).split("\n", 1)[0].strip()


def _cause(detail: str) -> str:
    """The reason a request failed, from the library's message (its error kinds are not
    exposed as types)."""
    for marker, cause in (
        ("ConnectionRefused", "connection refused (is the server running?)"),
        ("dns error", "its host name does not resolve"),
        ("TimedOut", "it did not answer in time"),
        ("timed out", "it did not answer in time"),
        ("error sending request", "the connection failed"),
    ):
        if marker in detail:
            return cause
    line = detail.split("\n", 1)[0]
    return line.rsplit(" - ", 1)[-1].strip() or "the request failed"


def _content_type(key: str) -> str:
    return mimetypes.guess_type(key)[0] or "application/octet-stream"


def _multipart(size: int) -> bool:
    return size >= MULTIPART_THRESHOLD


class S3Storage:
    """The API side: inputs kept, outputs read back for the v1 path, folders deleted by
    retention, presigned download URLs."""

    def __init__(self, location: S3Location) -> None:
        self.location = location
        self._store = location.store

    async def put_file(self, key: str, src: Path, content_type: str) -> None:
        # Metadata calls (microseconds) stay on the loop, as in the local storage.
        await self._put(key, src, os.stat(src).st_size, content_type)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(src)

    async def put_bytes(self, key: str, data: bytes, content_type: str) -> None:
        await self._put(key, data, len(data), content_type)

    async def get_bytes(self, key: str) -> bytes:
        try:
            result = await obstore.get_async(self._store, self._path(key))
            return (await result.bytes_async()).to_bytes()
        except FileNotFoundError:
            raise NotFound(_GONE) from None
        except _STORE_ERRORS as exc:
            raise self.location.unavailable(exc, "read an object from") from exc

    async def exists(self, key: str) -> bool:
        try:
            await obstore.head_async(self._store, self._path(key))
        except FileNotFoundError:
            return False
        except _STORE_ERRORS as exc:
            raise self.location.unavailable(exc, "look up an object in") from exc
        return True

    async def delete_prefix(self, prefix: str) -> None:
        folder = self._path(prefix)
        try:
            # The listing is by whole path segments: "outputs/j1" never lists "outputs/j10/…".
            listed = await obstore.list(self._store, prefix=folder).collect_async()
            # The object named exactly ``prefix`` goes too, as a local file of that name does.
            await obstore.delete_async(self._store, [folder, *(meta["path"] for meta in listed)])
        except _STORE_ERRORS as exc:
            raise self.location.unavailable(exc, "delete objects from") from exc

    def url(self, key: str, *, base_url: str, ttl_s: int) -> str:
        """A presigned GET of the object itself (``base_url`` is not used: the client
        downloads from the bucket). Signing is local computation once the credentials are
        known; only a first use of instance or web-identity credentials fetches them."""
        try:
            return obstore.sign(self._store, "GET", self._path(key), timedelta(seconds=ttl_s))
        except _STORE_ERRORS as exc:
            raise self.location.unavailable(exc, "sign a download URL for") from exc

    def _path(self, key: str) -> str:
        try:
            return self.location.path(key)
        except LookupError:
            raise NotFound(_GONE) from None

    async def _put(self, key: str, data: Path | bytes, size: int, content_type: str) -> None:
        path = self._path(key)
        try:
            await obstore.put_async(
                self._store,
                path,
                data,
                attributes={"Content-Type": content_type},
                use_multipart=_multipart(size),
                chunk_size=PART_SIZE,
                max_concurrency=PART_CONCURRENCY,
            )
        except _STORE_ERRORS as exc:
            raise self.location.unavailable(exc, "store an object in") from exc


class S3Blobs:
    """A worker's view: inputs downloaded into memory (a job's images are bounded by
    ``fetch.max_bytes`` each and decoded whole anyway), outputs built in local scratch files
    and uploaded whole, so a reader never sees half an output."""

    def __init__(self, location: S3Location) -> None:
        self.location = location
        self._store = location.store

    def open(self, key: str) -> BinaryIO:
        try:
            path = self.location.path(key)
            data = obstore.get(self._store, path).bytes().to_bytes()
        except (LookupError, FileNotFoundError):
            raise InputMissing(key) from None
        except _STORE_ERRORS as exc:
            raise self.location.unavailable(exc, "read an input from") from exc
        return io.BytesIO(data)

    def scratch(self, suffix: str) -> Path:
        fd, name = tempfile.mkstemp(suffix=suffix, prefix="kinema-output-")
        os.close(fd)
        return Path(name)

    def put_file(self, key: str, src: Path) -> None:
        try:
            self._put(key, src, src.stat().st_size)
        finally:
            with contextlib.suppress(FileNotFoundError):
                src.unlink()

    def put_bytes(self, key: str, data: bytes) -> None:
        self._put(key, data, len(data))

    def _put(self, key: str, data: Path | bytes, size: int) -> None:
        try:
            obstore.put(
                self._store,
                self.location.path(key),
                data,
                attributes={"Content-Type": _content_type(key)},
                use_multipart=_multipart(size),
                chunk_size=PART_SIZE,
                max_concurrency=PART_CONCURRENCY,
            )
        except _STORE_ERRORS as exc:
            raise self.location.unavailable(exc, "store an output in") from exc
