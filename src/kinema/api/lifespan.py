"""Building and tearing down the services (database, storage, runner, dispatcher) for one app."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from kinema.api.deps import Services
from kinema.api.endpoints import ENDPOINTS
from kinema.api.service import GenerationService, configured_presets, fetch_policy
from kinema.billing.ratelimit import RateLimiter
from kinema.billing.service import KeyService
from kinema.jobs.dispatcher import Dispatcher
from kinema.jobs.liveness import open_liveness
from kinema.jobs.notify import Notifier
from kinema.jobs.relay import Relay, open_relay
from kinema.jobs.retention import run_periodically
from kinema.jobs.service import JobService
from kinema.jobs.webhooks import deliver_forever
from kinema.media.fetch import guarded_client
from kinema.metrics.instruments import Metrics
from kinema.runners.base import Runner
from kinema.runners.factory import open_runner
from kinema.settings import Settings
from kinema.storage.factory import open_storage
from kinema.store.db import open_database
from kinema.voices.service import VoiceService


@contextlib.asynccontextmanager
async def services(
    settings: Settings,
    runner: Runner | None = None,
    relay: Relay | None = None,
    metrics: Metrics | None = None,
) -> AsyncIterator[Services]:
    """Everything an app needs; ``runner`` may be injected (tests share one across apps) and is
    then neither started nor closed here; so may ``relay`` (replicas in one process), which is
    started and closed here. With ``engines.workers = 0`` and no runner, this is an
    API-only replica: it accepts and answers requests, other processes run the jobs.
    ``metrics``: the app's registry (None: metrics are off)."""
    presets = configured_presets(settings)  # an unknown preset fails here, before any worker
    secret = settings.secret()
    db = open_database(settings.database_url, echo=settings.database.echo)
    await db.migrate()
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(db.dispose)
        if runner is None:
            runner = open_runner(settings)
            if runner is not None:
                await runner.start()
                stack.push_async_callback(runner.close)
        policy = fetch_policy(settings)
        http = await stack.enter_async_context(guarded_client(policy))
        storage = open_storage(settings, secret)
        keys = KeyService(db, secret, cache_s=settings.billing.key_cache_s)
        relay = open_relay(settings) if relay is None else relay
        notifier = Notifier(relay)
        if relay is not None:
            await relay.start(notifier.deliver)
            stack.push_async_callback(relay.close)
        # Held from before the first job is taken until after the last is handed back.
        liveness = open_liveness(settings)
        await liveness.start()
        stack.push_async_callback(liveness.close)
        jobs = JobService(db, settings, notifier, replica=liveness.id)
        limiter = RateLimiter(
            settings.rate_limit.default,
            settings.rate_limit.storage_url,
            key_prefix=settings.rate_limit.key_prefix,
        )
        stack.push_async_callback(limiter.close)
        models = {slug: endpoint.task.value for slug, endpoint in ENDPOINTS.items()}
        if metrics is not None:
            stack.callback(metrics.watch(runner, models))
        dispatcher = None
        if runner is not None:
            dispatcher = Dispatcher(
                db,
                jobs,
                runner,
                storage,
                settings.jobs,
                models=models,
                metrics=metrics,
                liveness=liveness,
            )
            dispatcher.start()
            stack.push_async_callback(dispatcher.stop)
        voices = VoiceService(db, storage)
        generation = GenerationService(
            settings,
            keys,
            jobs,
            limiter,
            storage,
            http,
            policy,
            presets,
            handoff=dispatcher,
            voices=voices,
        )
        cleanup = asyncio.create_task(run_periodically(db, storage, settings.retention))
        stack.callback(cleanup.cancel)
        svc = Services(
            settings=settings,
            secret=secret,
            db=db,
            keys=keys,
            jobs=jobs,
            limiter=limiter,
            storage=storage,
            http=http,
            generation=generation,
            voices=voices,
            runner=runner,
            dispatcher=dispatcher,
            metrics=metrics,
        )
        webhooks = asyncio.create_task(
            deliver_forever(
                db=db,
                settings=settings,
                secret=secret,
                http=http,
                storage=storage,
                keys=keys,
                jobs=jobs,
            )
        )
        stack.callback(webhooks.cancel)
        yield svc
