"""The blocking client: :class:`Client` and its :class:`Job` handle."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from types import TracebackType
from typing import Any

import httpx

from kinema.client import _core
from kinema.client._core import Config, Event, Progress, RetryPolicy, raise_for_answer, request_of
from kinema.client.builders import GenerationRequest, create_voice
from kinema.client.errors import ConnectionFailed
from kinema.client.media import MediaInput
from kinema.client.results import Output, Result

__all__ = ["Client", "Job"]

ProgressFn = Callable[[Progress], None]
SYNC_READ_TIMEOUT_S = 1800.0
"""How long a v1 call may wait for its answer: the generation runs while it waits."""


class Client:
    """A Kinema (or hosted API) client. ``base_url`` and ``api_key`` default to ``KINEMA_URL``
    (else ``http://127.0.0.1:8000``) and ``KINEMA_KEY``.

    ``timeout`` bounds each HTTP call but the v1 wait; ``retry`` says how 429, 502, 503, 504
    and broken connections are retried (never in a way that could charge twice);
    ``poll_interval`` is the cadence of :meth:`Job.wait`. ``transport`` is for tests.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        retry: RetryPolicy | None = None,
        poll_interval: float = 0.5,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.config = Config.build(base_url, api_key, timeout, retry, poll_interval)
        self._http = httpx.Client(timeout=timeout, transport=transport)
        self._sleep: Callable[[float], None] = time.sleep
        self._deduplicates_v1: bool | None = None
        """Whether the server deduplicates v1 by Idempotency-Key; None until it matters."""

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    # -- the hosted SDK's calls ------------------------------------------------------------

    def run_sync(
        self, model: str | GenerationRequest, params: Mapping[str, Any] | None = None
    ) -> bytes:
        """``POST /v1/{model}``: wait for the generation and return the media bytes.

        The call carries an ``Idempotency-Key`` that its retries reuse. Against a server that
        deduplicates v1 by it (Kinema says so at ``/healthz``) a 429, 502, 503, 504 or broken
        connection is retried and attaches to the same generation, charged once; against one
        that does not (the hosted API), only answers that prove nothing ran are retried.
        """
        request = request_of(model, params)
        response = self._send(
            "POST",
            f"/v1/{request.model}",
            "sync",
            json=dict(request.params),
            # One key for the call and its retries: a server that deduplicates v1 attaches a
            # retry to the generation already running, never a second charge.
            headers={"idempotency-key": _core.new_idempotency_key()},
            timeout=httpx.Timeout(self.config.timeout_s, read=SYNC_READ_TIMEOUT_S),
        )
        return response.content

    def submit(
        self,
        model: str | GenerationRequest,
        params: Mapping[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> Job:
        """``POST /v2/{model}``: queue the request and return its :class:`Job` at once.

        Every submit carries an ``Idempotency-Key`` (``idempotency_key``, else a new one) that
        its retries reuse, so a retried submit is never a second job or a second charge.
        """
        request = request_of(model, params)
        response = self._send(
            "POST",
            f"/v2/{request.model}",
            "safe",
            json=dict(request.params),
            headers={"idempotency-key": idempotency_key or _core.new_idempotency_key()},
        )
        body = response.json()
        return Job(self, body["request_id"], body.get("status_url"), body.get("response_url"))

    def run(
        self,
        model: str | GenerationRequest,
        params: Mapping[str, Any] | None = None,
        *,
        on_progress: ProgressFn | None = None,
        timeout: float | None = None,
    ) -> Result:
        """Submit (v2) and wait: the :class:`Result` once COMPLETED.

        Raises :class:`GenerationFailed` when the generation fails, and
        :class:`GenerationTimeout` after cancelling the job when ``timeout`` seconds pass first.
        """
        return self.submit(model, params).wait(timeout=timeout, on_progress=on_progress)

    def job(self, request_id: str) -> Job:
        """The handle of an earlier request (re-attach, e.g. after ``kinema i2v --async``)."""
        return Job(self, request_id)

    # -- account and voices ----------------------------------------------------------------

    def credits(self) -> float:
        """The key's balance (``GET /v1/get-user-credits``)."""
        return float(self._send("GET", "/v1/get-user-credits", "safe").json()["credits"])

    def create_voice(self, voice: MediaInput, name: str | None = None) -> str:
        """Create a voice from a 5-30 s sample; returns its ``voice_id`` for ``voice_ids``."""
        request = create_voice(voice, name)
        # Creating a voice is free, so a retry cannot charge twice; at worst it makes two.
        response = self._send("POST", f"/v1/{request.model}", "safe", json=dict(request.params))
        return str(response.json()["voice_id"])

    def webhook_secret(self) -> str:
        """The key's webhook signing secret (``whsec_…``) for :func:`webhooks.verify`."""
        return str(self._send("GET", "/v2/webhooks/secret", "safe").json()["secret"])

    # -- plumbing --------------------------------------------------------------------------

    def _send(
        self,
        method: str,
        path: str,
        kind: _core.CallKind,
        *,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout: httpx.Timeout | None = None,
        accept: tuple[int, ...] = (),
    ) -> httpx.Response:
        """One call with retries; an error answer (not in ``accept``) raises its APIError."""
        url = self.config.url(path)
        all_headers = {**self.config.headers(), **(headers or {})}
        policy = self.config.retry
        for attempt in range(policy.max_retries + 1):
            try:
                response = self._http.request(
                    method,
                    url,
                    json=json,
                    headers=all_headers,
                    timeout=timeout or self.config.timeout_s,
                )
            except httpx.TransportError as exc:
                retry = self._may_retry(_core.decide_error(kind, exc))
                delay = policy.delay(attempt) if retry else None
                if delay is None:
                    raise ConnectionFailed(
                        f"cannot reach the server ({method} {url}): {exc}"
                    ) from exc
                self._sleep(delay)
                continue
            if _core.shows_deduplication(response):
                self._deduplicates_v1 = True
            if response.is_success or response.status_code in accept:
                return response
            retry = self._may_retry(_core.decide_status(kind, response))
            delay = policy.delay(attempt, _core.retry_after(response)) if retry else None
            if delay is None:
                raise _core.error_of(response)
            self._sleep(delay)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _may_retry(self, decision: _core.Decision) -> bool:
        if decision != "if_deduplicated":
            return decision == "retry"
        if self._deduplicates_v1 is None:
            # Asked once, on the first v1 call that needs to know; unanswered means "no".
            try:
                answer = self._http.get(
                    self.config.url(_core.HEALTH_PATH), timeout=self.config.timeout_s
                )
            except httpx.TransportError:
                return False
            self._deduplicates_v1 = _core.deduplicates_v1(answer)
        return self._deduplicates_v1

    def _download(self, url: str) -> Iterator[tuple[int | None, bytes]]:
        # The key goes only to this server: a storage URL elsewhere is presigned.
        headers = self.config.headers() if self.config.same_origin(url) else {}
        # A result outlives the client's ``with`` block: then a one-off connection fetches it.
        owned = self._http.is_closed
        http = httpx.Client(timeout=self.config.timeout_s) if owned else self._http
        try:
            with http.stream("GET", url, headers=headers) as response:
                if not response.is_success:
                    response.read()
                    raise_for_answer(response)
                length = response.headers.get("content-length")
                total = int(length) if length and length.isdigit() else None
                for chunk in response.iter_bytes():
                    yield total, chunk
        except httpx.TransportError as exc:
            raise ConnectionFailed(f"GET {url}: {exc!r}") from exc
        finally:
            if owned:
                http.close()


class Job:
    """A submitted request: follow it (:meth:`status`, :meth:`events`, :meth:`wait`), get its
    :meth:`result` or :meth:`cancel` it. ``Client.job(request_id)`` re-attaches to one."""

    def __init__(
        self,
        client: Client,
        request_id: str,
        status_url: str | None = None,
        response_url: str | None = None,
    ) -> None:
        self.client = client
        self.request_id = request_id
        self.status_url = status_url or f"/v2/requests/{request_id}/status"
        self.response_url = response_url or f"/v2/requests/{request_id}"

    def __repr__(self) -> str:
        return f"Job({self.request_id!r})"

    def status(self) -> Progress:
        """The status now (a FAILED one included: it is an answer, not an error here)."""
        response = self.client._send("GET", self.status_url, "safe", accept=(422,))
        return Progress.of(response.json())

    def result(self) -> Result:
        """The result URL's body; :class:`GenerationFailed` when the request FAILED."""
        body = self.client._send("GET", self.response_url, "safe").json()
        output = body.get("output")
        return Result(
            request_id=str(body.get("request_id", self.request_id)),
            status=str(body.get("status", "")),
            output=Output(output, self.client._download) if isinstance(output, str) else None,
            metrics=body.get("metrics") or {},
            raw=body,
        )

    def cancel(self) -> Progress:
        """Ask the server to stop the job (queued: at once; running: at its next step). The
        job ends FAILED and refunded, unless it completed first."""
        path = f"/v2/requests/{self.request_id}/cancel"
        response = self.client._send("POST", path, "safe", accept=(422,))
        return Progress.of(response.json())

    def events(self) -> Iterator[Event]:
        """The job's Server-Sent Events (``status`` … then ``result``) until it ends."""
        url = self.client.config.url(f"/v2/requests/{self.request_id}/events")
        decoder = _core.SSEDecoder()
        # Keep-alives come every 15 s, so a read that waits much longer means a dead stream.
        timeout = httpx.Timeout(self.client.config.timeout_s, read=60.0)
        try:
            with self.client._http.stream(
                "GET", url, headers=self.client.config.headers(), timeout=timeout
            ) as response:
                if not response.is_success:
                    response.read()
                    raise_for_answer(response)
                for line in response.iter_lines():
                    event = decoder.feed(line)
                    if event is not None:
                        yield event
        except httpx.TransportError as exc:
            raise ConnectionFailed(f"GET {url}: {exc!r}") from exc

    def wait(self, timeout: float | None = None, on_progress: ProgressFn | None = None) -> Result:
        """Poll until the job ends; its :class:`Result`.

        ``on_progress`` gets each new reading. After ``timeout`` seconds the job is cancelled
        and :class:`GenerationTimeout` raised; FAILED raises :class:`GenerationFailed`.
        """
        deadline = time.monotonic() + (_core.MAX_WAIT_S if timeout is None else timeout)
        last: Progress | None = None
        while True:
            current = self.status()
            if on_progress is not None and current != last:
                on_progress(current)
            last = current
            failed = _core.final_error(current)
            if failed is not None:
                raise failed
            if current.status == "COMPLETED":
                return self.result()
            if time.monotonic() >= deadline:
                # A job that completes just as the wait ends is answered, not thrown away.
                if self.cancel().status == "COMPLETED":
                    return self.result()
                raise _core.timed_out(self.request_id, timeout)
            self.client._sleep(self.client.config.poll_interval_s)
