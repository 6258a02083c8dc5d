"""Request-scoped helpers shared by every router: the services container, the caller's key, the
body read under its size limit, and the route class of the sync path."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
from fastapi import Request, Response
from fastapi.routing import APIRoute

from kinema.api.validation import preparse
from kinema.billing.ratelimit import RateLimiter
from kinema.billing.service import KeyService
from kinema.errors import PayloadTooLarge
from kinema.jobs.service import JobService
from kinema.settings import Settings
from kinema.storage.base import Storage
from kinema.store.db import Database

if TYPE_CHECKING:
    from kinema.api.service import GenerationService
    from kinema.jobs.dispatcher import Dispatcher
    from kinema.metrics.instruments import Metrics
    from kinema.runners.base import Runner
    from kinema.voices.service import VoiceService


PREPARSE_BYTES = 1024 * 1024
"""From this size a body's JSON is parsed on a thread as it is read; below, a parse on the loop
(tens of microseconds) costs less than the hop."""


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
    metrics: Metrics | None = None
    """None when ``server.metrics`` is off."""


async def services(request: Request) -> Services:
    # async: FastAPI runs a plain ``def`` dependency on a thread pool (a hop per request).
    return services_of(request)


def services_of(request: Request) -> Services:
    """The services container, for :class:`DirectRoute` endpoints (they take no dependencies)."""
    svc: Services = request.app.state.services
    return svc


class DirectRoute(APIRoute):
    """A route FastAPI documents like any other (OpenAPI from the endpoint's signature and
    ``responses``) but calls directly, ``await endpoint(request, **path_params)``: no dependency
    solving, no per-request sub-response, no body or response-model handling. That machinery
    costs a request 0.3-0.4 ms on this project's 2-vCPU VM, which the sync path cannot spare.

    For hot endpoints that take the Request (and only string path parameters, which arrive
    unconverted), read what they need from it themselves, and return a Response."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        endpoint = self.endpoint

        async def handle(request: Request) -> Response:
            response: Response = await endpoint(request, **request.path_params)
            return response

        return handle


async def read_body(request: Request, limit_mb: float) -> bytes:
    """The request body, read up to ``limit_mb`` (``server.max_body_mb``): a larger declared
    Content-Length is refused before reading, a longer stream as soon as it passes the limit
    (413), so no more than the limit is ever held. A body of :data:`PREPARSE_BYTES` or more is
    joined and its JSON parsed on a thread (a :class:`ParsedBody`): the bodies sent here are
    JSON, and parsing a large one on the loop stopped every other request (5.1 s for 240 MB)."""
    limit = int(limit_mb * 1024 * 1024)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(_too_large(limit_mb))
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(_too_large(limit_mb))
        chunks.append(chunk)
    if size >= PREPARSE_BYTES:  # parsed here, off the loop (parse_body then takes the result)
        return await asyncio.to_thread(preparse, chunks)
    return b"".join(chunks)


def _too_large(limit_mb: float) -> str:
    return (
        f"request body exceeds the {limit_mb:g} MB limit (server.max_body_mb); "
        "send large images as URLs"
    )


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
