"""The app factory: settings in, a FastAPI app out. No clients or engines exist before the
lifespan starts; the API process never imports torch or diffusers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from kinema import __version__
from kinema.api import docs, errors, health, openapi, playground
from kinema.api import routes as generation_routes
from kinema.api.lifespan import services
from kinema.billing import routes as billing_routes
from kinema.jobs import routes as job_routes
from kinema.jobs.relay import Relay
from kinema.metrics import routes as metrics_routes
from kinema.metrics.http import HttpMetrics
from kinema.metrics.instruments import Metrics
from kinema.runners.base import Runner
from kinema.settings import Settings
from kinema.storage import routes as storage_routes
from kinema.voices import routes as voice_routes

PUBLIC_ROUTES = frozenset(
    {
        "/healthz",
        "/readyz",
        "/metrics",
        "/v1/files/{key:path}",
        "/openapi.json",
        "/docs",
        "/docs/oauth2-redirect",
        "/docs/assets/{name}",
        "/redoc",
        "/",
        "/playground",
        "/playground/assets/{name}",
    }
)
"""Routes that take no API key (a test fails on any other route that does not authenticate)."""


def create_app(
    settings: Settings, *, runner: Runner | None = None, relay: Relay | None = None
) -> FastAPI:
    # The app's own registry (never the process-wide default: apps must not share counts).
    metrics = Metrics() if settings.server.metrics else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with services(settings, runner, relay, metrics) as svc:
            app.state.services = svc
            yield

    app = FastAPI(
        title="Kinema",
        version=__version__,
        lifespan=lifespan,
        description="Self-hosted image-to-video and image-to-image behind the hosted contract.",
        docs_url=None,  # served by api/docs.py, with local assets
        redoc_url=None,
    )
    errors.install(app)
    openapi.install(app)
    # Order matters: the one fixed /v1 POST path (voice creation) must match before the sync
    # path POST /v1/{slug}, which comes next, ahead of the rest (the fixed /v1 GET paths match
    # later: a route of another method only matches partially).
    app.include_router(voice_routes.router)
    generation_routes.install_sync(app.router)
    app.include_router(billing_routes.router)
    app.include_router(job_routes.router)
    app.include_router(storage_routes.router)
    app.include_router(generation_routes.router)
    app.include_router(health.router)
    app.include_router(docs.router)
    app.include_router(playground.router)
    if metrics is not None:
        app.include_router(metrics_routes.router)
        app.add_middleware(HttpMetrics, metrics=metrics)
    return app
