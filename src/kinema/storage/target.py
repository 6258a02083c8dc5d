"""Where the storage is, as a worker on any machine needs to know it."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class StorageTarget(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    backend: Literal["local"] = "local"
    root: str
    """The local storage's directory."""
