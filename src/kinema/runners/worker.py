"""The worker process: loads engines once, then runs jobs sent by the API process.

Protocol: JSON lines. The parent writes ``{"op": "run", ...}`` / ``{"op": "cancel", "job_id"}``
to stdin; the worker answers on its original stdout with ``ready``, ``progress``, ``done``,
``failed``, ``cancelled`` or ``fatal`` events. Stray prints from libraries go to stderr, because
stdout is the protocol. Torch and diffusers are imported here, never in the API process.

One thread: jobs run on the main thread, which blocks on stdin while idle and, while a job runs,
polls stdin for a cancel at every progress report (engines report after each denoising step,
and a cancel only ever takes effect there). No thread hand-off sits on a job's path.

Run as ``python -m kinema.runners.worker '<config json>'``.
"""

from __future__ import annotations

import base64
import io
import json
import os
import select
import sys
import traceback
from collections import deque
from pathlib import Path
from typing import Any, TextIO

from kinema.engines.base import Engine, EngineCancelled, Task
from kinema.engines.registry import LoadOptions, get_preset, load_engine, load_plugins
from kinema.engines.weights import WeightsMissing
from kinema.runners.execute import ExecutionError, execute


class Channel:
    """The protocol stream to the parent (the worker's original stdout)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def send(self, event: str, **fields: Any) -> None:
        self._stream.write(json.dumps({"event": event, **fields}) + "\n")
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


class Inbox:
    """The parent's messages, read straight from the stdin file descriptor (no buffered text
    layer, so a poll never blocks on a partial line)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._buffer = b""
        self.closed = False
        self._ready: deque[dict[str, Any]] = deque()

    def wait(self) -> dict[str, Any] | None:
        """The next message, blocking; None once the parent has closed stdin."""
        while not self._ready and not self.closed:
            self._read()
        return self._ready.popleft() if self._ready else None

    def poll(self) -> list[dict[str, Any]]:
        """The messages that have arrived, without blocking."""
        while not self.closed and select.select([self._fd], [], [], 0)[0]:
            self._read()
        found = list(self._ready)
        self._ready.clear()
        return found

    def push_back(self, messages: list[dict[str, Any]]) -> None:
        self._ready.extendleft(reversed(messages))

    def _read(self) -> None:
        chunk = os.read(self._fd, 1 << 16)
        if not chunk:
            self.closed = True
            return
        *lines, self._buffer = (self._buffer + chunk).split(b"\n")
        self._ready.extend(json.loads(line) for line in lines if line.strip())


def _run_one(
    channel: Channel, engines: dict[Task, Engine], message: dict[str, Any], inbox: Inbox
) -> None:
    job_id = message["job_id"]
    last = [-1.0]

    def progress(value: float) -> None:
        # Also called, at 1.0, as a mere cancel check after the last step (while encoding).
        if _cancel_arrived(inbox, job_id):
            raise EngineCancelled(job_id)
        if value - last[0] >= 0.01 or value >= 1.0 > last[0]:
            last[0] = value
            channel.send("progress", job_id=job_id, value=round(value, 4))

    try:
        result = execute(
            engines,
            message["task"],
            message["params"],
            _with_data(message["inputs"], message.get("data", {})),
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


def _with_data(inputs: dict[str, Any], data: dict[str, str]) -> dict[str, Any]:
    """The inputs with every path whose contents came inside the message replaced by those
    contents (base64 in the message; an in-memory file here)."""

    def one(path: str) -> str | io.BytesIO:
        return io.BytesIO(base64.b64decode(data[path])) if path in data else path

    return {
        name: [one(p) for p in value] if isinstance(value, list) else one(value)
        for name, value in inputs.items()
    }


def _cancel_arrived(inbox: Inbox, job_id: str) -> bool:
    """Whether the parent cancelled ``job_id`` (or went away) since the last look; other
    messages are kept for after the job."""
    later: list[dict[str, Any]] = []
    cancelled = False
    for message in inbox.poll():
        if message["op"] == "cancel":
            cancelled = cancelled or message["job_id"] == job_id
        else:
            later.append(message)
    inbox.push_back(later)
    return cancelled or inbox.closed


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
    inbox = Inbox(sys.stdin.fileno())
    while (message := inbox.wait()) is not None:
        if message["op"] == "run":
            _run_one(channel, engines, message, inbox)
        # A cancel for a job that is not running has nothing left to stop.
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
