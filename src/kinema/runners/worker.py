"""The worker process: loads engines once, then runs jobs sent by the API process.

Protocol: JSON lines. The parent writes ``{"op": "run", ...}`` / ``{"op": "cancel", "job_id"}``
to stdin; the worker answers on its original stdout with ``ready``, ``progress``, ``done``,
``failed``, ``cancelled`` or ``fatal`` events. Stray prints from libraries go to stderr, because
stdout is the protocol. Torch and diffusers are imported here, never in the API process.

Run as ``python -m kinema.runners.worker '<config json>'``.
"""

from __future__ import annotations

import json
import os
import queue
import sys
import threading
import traceback
from pathlib import Path
from typing import Any, TextIO

from kinema.engines.base import Engine, EngineCancelled, Task
from kinema.engines.registry import LoadOptions, get_preset, load_engine, load_plugins
from kinema.engines.weights import WeightsMissing
from kinema.runners.execute import ExecutionError, execute


class Channel:
    """The protocol stream, shared by the job thread and the reader thread."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def send(self, event: str, **fields: Any) -> None:
        line = json.dumps({"event": event, **fields})
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()


def load_engines(config: dict[str, Any]) -> dict[Task, Engine]:
    options = LoadOptions(
        **{**config["load_options"], "models_dir": Path(config["load_options"]["models_dir"])}
    )
    load_plugins(config.get("plugins", []))
    engines: dict[Task, Engine] = {}
    missing: list[str] = []
    for name in config["presets"]:
        try:
            engines[get_preset(name).task] = load_engine(name, options)
        except WeightsMissing as exc:  # report every preset's missing weights at once
            missing.append(str(exc))
    if missing:
        raise WeightsMissing("; ".join(missing))
    return engines


def _run_one(
    channel: Channel, engines: dict[Task, Engine], message: dict[str, Any], cancel: threading.Event
) -> None:
    job_id = message["job_id"]
    last = [-1.0]

    def progress(value: float) -> None:
        if cancel.is_set():
            raise EngineCancelled(job_id)
        if value - last[0] >= 0.01 or value >= 1.0:
            last[0] = value
            channel.send("progress", job_id=job_id, value=round(value, 4))

    try:
        result = execute(
            engines,
            message["task"],
            message["params"],
            message["inputs"],
            Path(message["output_dir"]),
            progress,
        )
    except EngineCancelled:
        channel.send("cancelled", job_id=job_id)
    except ExecutionError as exc:
        channel.send("failed", job_id=job_id, error=str(exc))
    except Exception as exc:  # an engine bug or OOM: this job fails, the worker lives on
        traceback.print_exc(file=sys.stderr)
        channel.send("failed", job_id=job_id, error=f"{type(exc).__name__}: {exc}")
    else:
        channel.send("done", job_id=job_id, **result)


def _job_loop(
    channel: Channel,
    engines: dict[Task, Engine],
    jobs: queue.Queue[Any],
    cancels: dict[str, threading.Event],
) -> None:
    while (message := jobs.get()) is not None:
        event = cancels.setdefault(message["job_id"], threading.Event())
        try:
            _run_one(channel, engines, message, event)
        finally:
            cancels.pop(message["job_id"], None)


def main(argv: list[str]) -> int:
    # Keep the real stdout for the protocol; send everything else that prints to stderr.
    channel = Channel(os.fdopen(os.dup(1), "w", buffering=1))
    os.dup2(2, 1)
    config = json.loads(argv[0])
    try:
        engines = load_engines(config)
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        channel.send("fatal", error=f"could not load engines: {type(exc).__name__}: {exc}")
        return 1
    channel.send("ready", presets=config["presets"], pid=os.getpid())
    jobs: queue.Queue[Any] = queue.Queue()
    cancels: dict[str, threading.Event] = {}
    thread = threading.Thread(target=_job_loop, args=(channel, engines, jobs, cancels), daemon=True)
    thread.start()
    for line in sys.stdin:
        message = json.loads(line)
        if message["op"] == "run":
            cancels.setdefault(message["job_id"], threading.Event())
            jobs.put(message)
        elif message["op"] == "cancel" and message["job_id"] in cancels:
            cancels[message["job_id"]].set()
    jobs.put(None)  # stdin closed: the parent is gone or shutting down
    thread.join(timeout=5)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
