"""Calls to Ray with a deadline: the one way :mod:`kinema.runners.ray` reaches the cluster
outside a run's stream (an unhealthy deployment or an unreachable cluster otherwise leaves the
caller waiting forever). Failures are :class:`~kinema.runners.base.RunnerLost`."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import TypeVar

import ray
from ray.exceptions import RayError
from ray.serve.exceptions import RayServeException

from kinema.runners.base import RunnerLost

T = TypeVar("T")


async def call(fn: Callable[..., T], *args: object, timeout_s: float, what: str) -> T:
    """A blocking Ray call, in a thread of its own, bounded by ``timeout_s``; its failures as
    :class:`RunnerLost`. A call past its deadline is left to end in its thread, a daemon that
    nothing waits for (an executor's thread would hold up the event loop's and the process's
    exit)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def run() -> None:
        try:
            outcome: tuple[T | None, BaseException | None] = (fn(*args), None)
        except BaseException as exc:  # handed to the caller
            outcome = (None, exc)
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits
            loop.call_soon_threadsafe(_settle, future, *outcome)

    threading.Thread(target=run, name=f"ray: {what}", daemon=True).start()
    try:
        return await asyncio.wait_for(future, timeout_s)
    except TimeoutError:
        raise RunnerLost(f"Ray: {what} did not answer within {timeout_s:g} s") from None
    except (RayError, RayServeException, ConnectionError) as exc:
        raise RunnerLost(f"Ray: {what} failed: {first_line(exc)}") from exc


def _settle(future: asyncio.Future[T], result: T | None, error: BaseException | None) -> None:
    if future.done():  # given up at its deadline
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)  # type: ignore[arg-type]  # None only with an error


def connect(address: str) -> None:
    """Join the cluster at ``address`` as a driver (blocking). Ray allows one connection per
    process: one already made is kept, whatever its address."""
    if not ray.is_initialized():
        # Replicas' logs stay on the cluster's nodes (``ray logs``), not in the API's.
        ray.init(address=address, log_to_driver=False, configure_logging=False)


def first_line(exc: object) -> str:
    """An error's first line, for a one-line message (Ray's run over many)."""
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__
