"""Where the storage is, as a worker on any machine needs to know it.

A target travels to the worker as part of its command line (:class:`~kinema.runners.protocol.
WorkerConfig`), where any local user can read it, so it never holds a secret. An S3 worker takes
its credentials from its environment, read by the S3 client as every AWS tool reads them
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, web identity, instance
metadata); credentials given in the settings are put into that environment by whoever starts
the worker (:func:`kinema.storage.factory.worker_environment`).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

S3_EXTRA = 'storage.backend = "s3" needs the S3 client: pip install "kinema[s3]"'


class LocalTarget(BaseModel):
    """A directory every worker can reach (this machine's, or a shared filesystem)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    backend: Literal["local"] = "local"
    root: str
    """The local storage's directory."""


class S3Target(BaseModel):
    """An S3-compatible bucket; ``None`` fields fall back to the worker's AWS environment."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    backend: Literal["s3"] = "s3"
    bucket: str
    endpoint_url: str | None = None
    prefix: str = ""
    region: str | None = None


StorageTarget = Annotated[LocalTarget | S3Target, Field(discriminator="backend")]
