"""Request-scoped helpers shared by every router: the services container and the caller's key."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx
from fastapi import Request

from kinema.billing.ratelimit import RateLimiter
from kinema.billing.service import KeyService
from kinema.jobs.service import JobService
from kinema.settings import Settings
from kinema.storage.base import Storage
from kinema.store.db import Database

if TYPE_CHECKING:
    from kinema.api.service import GenerationService
    from kinema.jobs.dispatcher import Dispatcher
    from kinema.runners.base import Runner
    from kinema.voices.service import VoiceService


@dataclass
class Services:
    """Everything the routes need, built once in the app's lifespan."""

    settings: Settings
    secret: bytes
    db: Database
    keys: KeyService
    jobs: JobService
    limiter: RateLimiter
    storage: Storage
    http: httpx.AsyncClient
    generation: GenerationService
    voices: VoiceService
    runner: Runner | None
    """None in an API-only replica (``engines.workers = 0``)."""
    dispatcher: Dispatcher | None


async def services(request: Request) -> Services:
    # async: FastAPI runs a plain ``def`` dependency on a thread pool (a hop per request).
    svc: Services = request.app.state.services
    return svc


def api_key(request: Request) -> str | None:
    """The key from ``x-api-key`` or ``Authorization: Bearer``."""
    key = request.headers.get("x-api-key")
    if key:
        return key.strip()
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def base_url(request: Request, settings: Settings) -> str:
    return (settings.server.public_url or str(request.base_url)).rstrip("/")
