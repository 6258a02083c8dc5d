"""Submitting a generation: the steps every request goes through, sync or async.

model slug (404/405/410) → content type (406) → key (401/403) → rate limit (429) → body (400)
→ voice ids (400) → engine capabilities (400) → input media fetched, headers checked (400) →
inputs fully verified (400) → price reserved + job inserted in one transaction (406).
Auth comes before the body so that unauthenticated callers cannot make the server fetch URLs.

A sync job that gets a free local slot is sent to its worker before the last two steps, which
then overlap with the generation; if either refuses the request, the run is stopped and nothing
of it is kept (no row, no charge). Only inputs whose headers passed reach a worker early."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hashlib
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from kinema.api.endpoints import ENDPOINTS, Endpoint, MediaRef, MediaRefs
from kinema.api.validation import parse_body
from kinema.billing.ratelimit import RateLimiter, RateState
from kinema.billing.repository import KeyRecord
from kinema.billing.service import KeyService
from kinema.engines.base import Task
from kinema.engines.registry import Preset, get_preset, load_plugins
from kinema.engines.speech import speech_for
from kinema.errors import (
    Gone,
    InsufficientCredits,
    InvalidRequest,
    KinemaError,
    NotAcceptable,
    NotFound,
    RateLimited,
    StorageUnavailable,
)
from kinema.jobs.handoff import Handoff, Handoffs
from kinema.jobs.models import Job, NewJob, Webhook
from kinema.jobs.service import JobService
from kinema.media.fetch import FetchPolicy, check_target, is_url, load_media
from kinema.media.images import check_header, header_pixels, verify_image
from kinema.settings import Settings
from kinema.storage.base import Storage
from kinema.voices.service import VoiceService

INLINE_DECODE_PIXELS = 256 * 256
"""Up to this many pixels (as the header declares them) an image is decoded on the event loop:
about 10 ns a pixel, so under 1 ms, less than a thread hop. Pixels, not bytes: a 38 KB PNG can
declare 40 MP and took 150 ms of loop time when decided by its size."""

VOICE_SLUG = "kling-create-voice"


@dataclass(frozen=True)
class Submission:
    job: Job
    key: KeyRecord
    rate: RateState
    endpoint: Endpoint
    balance_micros: int | None
    """The balance right after this request's reservation; None for an idempotent replay."""


class GenerationService:
    def __init__(
        self,
        settings: Settings,
        keys: KeyService,
        jobs: JobService,
        limiter: RateLimiter,
        storage: Storage,
        http: httpx.AsyncClient,
        policy: FetchPolicy,
        presets: dict[Task, Preset],
        handoff: Handoffs | None = None,
        voices: VoiceService | None = None,
    ) -> None:
        self._presets = presets
        """The configured preset per task (:func:`configured_presets`): submit-time checks read
        their capabilities."""
        self._settings = settings
        self._keys = keys
        self._jobs = jobs
        self._limiter = limiter
        self._storage = storage
        self._http = http
        """Must come from :func:`guarded_client` (it enforces the address policy on connect)."""
        self._policy = policy
        self._handoff = handoff
        """This process's dispatcher: sync jobs go straight to a free local slot."""
        self._voices = voices
        self._funds: dict[str, int] = {}
        """Key id → its balance as this process last saw it (after a reservation, or 0 after a
        refusal): a sync job whose key is known to be short is not started before its
        reservation, so a key without credits cannot make a worker start runs (an unknown or
        stale figure only chooses the order of the steps, never the outcome)."""

    def endpoint(self, slug: str) -> Endpoint:
        if slug in self._settings.retired_models:
            raise Gone(f"model {slug} has been retired by the operator")
        try:
            return ENDPOINTS[slug]
        except KeyError:
            raise NotFound(f"model {slug} not found") from None

    async def submit(
        self,
        slug: str,
        *,
        content_type: str | None,
        api_key: str | None,
        body: Callable[[], Awaitable[bytes]],
        sync: bool,
        idempotency_key: str | None = None,
        origin: Callable[[], str],
    ) -> tuple[Submission, Any]:
        """``body`` reads the request body (under its size limit): only once the key and its rate
        limit have passed, so an unknown caller's body is never read. ``origin``: the base URL
        of this API as the client reached it (for a webhook's output link)."""
        endpoint = self.endpoint(slug)
        # A sync request that may start early is only checked against its rate limit here, and
        # counted once its job is on its way to a worker (the counter's bookkeeping then
        # overlaps with the generation) — or before its inputs are verified when no slot is
        # free, or as it fails before either: every submit is counted once.
        late = sync and self._handoff is not None
        key, rate = await self.admit(
            slug, content_type=content_type, api_key=api_key, count=not late
        )
        count = _Count(self._limiter, key, rate)
        try:
            return await self._submit(endpoint, key, count, body, sync, idempotency_key, origin)
        except KinemaError as exc:
            # A refused submit counts too, so its answer says where the key stands.
            state = await count.settle()
            if state is not None:
                exc.headers = {**state.headers(), **exc.headers}
            raise
        finally:
            await count.settle()

    async def _submit(
        self,
        endpoint: Endpoint,
        key: KeyRecord,
        count: _Count,
        read_body: Callable[[], Awaitable[bytes]],
        sync: bool,
        idempotency_key: str | None,
        origin: Callable[[], str],
    ) -> tuple[Submission, Any]:
        slug = endpoint.slug
        body = await read_body()
        request = parse_body(endpoint.request_model, body)
        webhook = getattr(request, "webhook", None)
        if webhook is not None:
            check_target(webhook, field="webhook", policy=self._policy)
        voice_ids = endpoint.voice_ids(request)
        if voice_ids and self._voices is not None:
            await self._voices.require(key.id, voice_ids)
        endpoint.check(request, self._presets)
        job_id = str(uuid.uuid4())
        plan = endpoint.plan(request, job_id, self._presets)
        new = NewJob(
            id=job_id,
            key_id=key.id,
            model=slug,
            spec=plan.spec,
            price_micros=endpoint.price(plan.spec, self._settings.billing),
            sync=sync,
            idempotency_key=idempotency_key,
            # Only an idempotent replay compares bodies: no hash of a large body otherwise.
            request_hash=_request_hash(slug, body) if idempotency_key else None,
            webhook=None if webhook is None else Webhook(webhook, origin()),
        )
        if idempotency_key:
            earlier = await self._jobs.replay(new)
            if earlier is not None:
                return Submission(earlier, key, await count.take(), endpoint, None), request
        refs = plan.media
        blobs = await self._fetch_all(refs)
        handoff = await self._slot(new)
        if handoff is None:
            await count.take()
            await self._verify_all(refs, blobs)
        try:
            await self._keep_inputs(refs, blobs, handoff)
            if handoff is not None:
                assert self._handoff is not None
                self._handoff.start_early(new, handoff)
                # One loop turn, so that the job's task sends it to the worker before the
                # request's remaining checks and its insert (which then overlap with the run).
                await asyncio.sleep(0)
                await count.take()
                await self._verify_all(refs, blobs)
            job, balance = await self._jobs.submit(new, handoff.lease if handoff else None)
        except BaseException as exc:
            # The submit's own error is the answer: a storage that is down cannot take the
            # inputs back either (its adapter has logged that).
            with contextlib.suppress(StorageUnavailable):
                await self._discard_inputs(new.id, handoff)
            if isinstance(exc, InsufficientCredits):
                self._funds[key.id] = 0
            raise
        if balance is not None:
            self._funds[key.id] = balance
        if job.id != new.id:  # lost an idempotency race: the earlier job answers
            await self._discard_inputs(new.id, handoff)
        elif handoff is not None:
            assert self._handoff is not None
            self._handoff.admit(handoff, job)
        return Submission(job, key, await count.take(), endpoint, balance), request

    async def _slot(self, new: NewJob) -> Handoff | None:
        """A free local slot for a sync job, unless its key is known to be short of its price."""
        if not new.sync or self._handoff is None:
            return None
        if self._funds.get(new.key_id, new.price_micros) < new.price_micros:
            return None
        return await self._handoff.offer_slot(new.model)

    async def admit(
        self, slug: str, *, content_type: str | None, api_key: str | None, count: bool = True
    ) -> tuple[KeyRecord, RateState | None]:
        """The checks before any body is read: JSON (406), key (401/403), rate limit (429).
        With ``count`` the request is counted against the rate limit and its state returned;
        without, only checked (None: the caller counts it later)."""
        if not _is_json(content_type):
            raise NotAcceptable(
                f"Content-Type must be application/json (got {content_type or 'none'})"
            )
        key = await self._keys.authenticate(api_key, model=slug)
        if not count:
            await self._limiter.check(key.id, key.rate_limit)
            return key, None
        return key, await self._limiter.hit(key.id, key.rate_limit)

    async def fetch(self, value: str, *, field: str) -> bytes:
        """An input given as URL, data URI or base64, under the fetch policy (SSRF, size cap)."""
        return await load_media(value, field=field, policy=self._policy, client=self._http)

    async def _keep_inputs(
        self, refs: MediaRefs, blobs: list[bytes], handoff: Handoff | None
    ) -> None:
        """Keep the verified inputs under the keys the job's spec names, so that a retry after a
        restart needs no second fetch: in the storage, or, for a job handed straight to a local
        slot, with the hand-off (the dispatcher moves them to the storage if it must give the
        job up)."""
        for ref, data in zip(refs, blobs, strict=True):
            if handoff is not None:
                await handoff.keep(ref.key, data)
            else:
                await self._storage.put_bytes(ref.key, data, "application/octet-stream")

    async def _discard_inputs(self, job_id: str, handoff: Handoff | None) -> None:
        if handoff is not None:
            assert self._handoff is not None
            await self._handoff.withdraw(handoff)
        if handoff is None or handoff.stored:
            await self._storage.delete_prefix(f"inputs/{job_id}")

    async def _fetch_all(self, refs: MediaRefs) -> list[bytes]:
        """Every input, its header checked (format, pixel limit). Downloads run concurrently;
        inline data (base64, data URIs) is decoded in turn: tasks for it would only add
        event-loop turns."""
        downloads = [ref for ref in refs if is_url(ref.value)]
        if len(downloads) <= 1:
            fetched = [await self._fetch(ref) for ref in refs]
        else:
            fetched = list(await asyncio.gather(*(self._fetch(ref) for ref in refs)))
        total, budget = (
            sum(pixels for _, pixels in fetched),
            self._settings.fetch.max_request_pixels,
        )
        if total > budget:
            raise InvalidRequest(
                f"the request's {len(refs)} images have {total:,} pixels in all, over the "
                f"limit of {budget:,} (fetch.max_request_pixels); send smaller images (the "
                "engines work at about 1-2 megapixels per image)"
            )
        return [data for data, _ in fetched]

    async def _fetch(self, ref: MediaRef) -> tuple[bytes, int]:
        data = await self.fetch(ref.value, field=ref.field)
        pixels = check_header(data, field=ref.field, max_pixels=self._settings.fetch.max_pixels)
        return data, pixels

    async def _verify_all(self, refs: MediaRefs, blobs: list[bytes]) -> None:
        """Every input fully decoded (corrupt or truncated data is a 400)."""
        for ref, data in zip(refs, blobs, strict=True):
            verify = functools.partial(
                verify_image, data, field=ref.field, max_pixels=self._settings.fetch.max_pixels
            )
            # Small images decode in well under a millisecond: inline beats a thread hop.
            pixels = header_pixels(data)
            if pixels is not None and pixels <= INLINE_DECODE_PIXELS:
                verify()
            else:
                await asyncio.to_thread(verify)


class _Count:
    """A request's rate-limit count, taken once: at admission (``state`` given), or later than
    its check (see ``submit``)."""

    def __init__(self, limiter: RateLimiter, key: KeyRecord, state: RateState | None) -> None:
        self._limiter = limiter
        self._key = key
        self._state = state
        self.taken = state is not None

    async def settle(self) -> RateState | None:
        """Count the request unless it was (every submit counts once, whatever its answer):
        its rate-limit state, or None when that count was refused."""
        if not self.taken:
            with contextlib.suppress(RateLimited):
                await self.take()
        return self._state

    async def take(self) -> RateState:
        """Count the request unless it was counted; its rate-limit state either way (429 when a
        concurrent request took the window's last place; a refused count is not taken again)."""
        if self._state is None:
            assert not self.taken
            self.taken = True
            self._state = await self._limiter.hit(self._key.id, self._key.rate_limit)
        return self._state


def configured_presets(settings: Settings) -> dict[Task, Preset]:
    """The engine preset serving each task; raises (at start-up) on an unknown preset or a
    configuration that leaves a task without an engine."""
    load_plugins(settings.engines.plugins)
    names = settings.engines.resolved_presets()
    presets = {preset.task: _speaking(preset, settings) for preset in map(get_preset, names)}
    if set(presets) != {endpoint.task for endpoint in ENDPOINTS.values()}:
        raise ValueError(
            f"engine presets {', '.join(names)} must cover image-to-video and image-to-image"
        )
    return presets


def _speaking(preset: Preset, settings: Settings) -> Preset:
    """``preset`` as the workers run it: without a speech engine beside it
    (``engines.speech_preset = "none"``) no video engine follows a speech track."""
    if speech_for(preset, settings.engines.speech_preset) is not None:
        return preset
    quiet = dataclasses.replace(preset.capabilities, follows_audio=False)
    return dataclasses.replace(preset, capabilities=quiet)


def fetch_policy(settings: Settings) -> FetchPolicy:
    return FetchPolicy(
        max_bytes=settings.fetch.max_bytes,
        timeout_s=settings.fetch.timeout_s,
        allow_hosts=tuple(settings.fetch.allow_hosts),
    )


def _is_json(content_type: str | None) -> bool:
    if not content_type:
        return False
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == "application/json" or media_type.endswith("+json")


def _request_hash(slug: str, body: bytes) -> str:
    """What an idempotent replay compares (the body hashed in place, not copied)."""
    digest = hashlib.sha256(slug.encode() + b"\n")
    digest.update(body)
    return digest.hexdigest()
