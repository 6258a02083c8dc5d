"""The worker process: loads engines once, then runs jobs sent by the API process.

Protocol: :mod:`kinema.runners.protocol`, one JSON line per message — commands on stdin, events
on the worker's original stdout. Stray prints from libraries go to stderr, because stdout is the
protocol. Torch and diffusers are imported here, never in the API process.

Jobs run on the main thread, which blocks on stdin while idle and, while a job runs, polls stdin
for a cancel at every progress report (engines report after each denoising step, and a cancel
only ever takes effect there). A second thread sends a :class:`~kinema.runners.protocol.
Heartbeat` every ``heartbeat_s`` while a job runs, with the number of progress reports so far:
the parent tells a live but stalled run (the count stops) from a frozen process (no heartbeat).

Run as ``python -m kinema.runners.worker '<WorkerConfig json>'``.
"""

from __future__ import annotations

import os
import select
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from typing import BinaryIO

from pydantic import ValidationError

from kinema.engines.base import Engine, EngineCancelled, Task
from kinema.engines.registry import get_preset, load_engine, load_plugins
from kinema.engines.speech import VoiceEngine, load_voice_engine
from kinema.engines.weights import WeightsMissing
from kinema.media.encoding import EncoderSettings
from kinema.runners.execute import ExecutionError, execute
from kinema.runners.protocol import (
    Cancel,
    Cancelled,
    Done,
    Failed,
    Fatal,
    Heartbeat,
    Phase,
    PhaseChanged,
    Progress,
    Ready,
    Run,
    RunTask,
    WorkerConfig,
    decode_command,
    decode_config,
    encode,
)
from kinema.storage.blobs import Blobs, open_blobs

Event = Ready | Fatal | Progress | PhaseChanged | Heartbeat | Done | Failed | Cancelled


class Channel:
    """The protocol stream to the parent (the worker's original stdout); two threads write."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def send(self, event: Event) -> None:
        line = encode(event)
        with self._lock:
            self._stream.write(line)
            self._stream.flush()


def load_engines(config: WorkerConfig) -> dict[Task, Engine]:
    load_plugins(list(config.plugins))
    engines: dict[Task, Engine] = {}
    missing: list[str] = []
    for name in config.presets:
        try:
            engines[get_preset(name).task] = load_engine(name, config.load_options)
        except WeightsMissing as exc:  # report every preset's missing weights at once
            missing.append(str(exc))
    if missing:
        raise WeightsMissing("; ".join(missing))
    return engines


def load_speech(config: WorkerConfig) -> VoiceEngine | None:
    """The speech engine that speaks ``voice_ids`` for this worker's video engine, if any."""
    if config.speech_preset is None:
        return None
    return load_voice_engine(config.speech_preset, config.load_options)


def load_all(config: WorkerConfig) -> tuple[dict[Task, Engine], VoiceEngine | None]:
    """This worker's engines and its speech engine. The speech engine loads first (it is
    small); every missing weight, the speech engine's too, is reported at once."""
    missing: list[str] = []
    speech: VoiceEngine | None = None
    engines: dict[Task, Engine] = {}
    try:
        speech = load_speech(config)
    except WeightsMissing as exc:
        missing.append(str(exc))
    try:
        engines = load_engines(config)
    except WeightsMissing as exc:
        missing.append(str(exc))
    if missing:
        raise WeightsMissing("; ".join(missing))
    return engines, speech


class Inbox:
    """The parent's commands, read straight from the stdin file descriptor (no buffered text
    layer, so a poll never blocks on a partial line)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._buffer = b""
        self.closed = False
        self._ready: deque[Run | Cancel] = deque()

    def wait(self) -> Run | Cancel | None:
        """The next command, blocking; None once the parent has closed stdin."""
        while not self._ready and not self.closed:
            self._read()
        return self._ready.popleft() if self._ready else None

    def poll(self) -> list[Run | Cancel]:
        """The commands that have arrived, without blocking."""
        while not self.closed and select.select([self._fd], [], [], 0)[0]:
            self._read()
        found = list(self._ready)
        self._ready.clear()
        return found

    def push_back(self, commands: list[Run | Cancel]) -> None:
        self._ready.extendleft(reversed(commands))

    def _read(self) -> None:
        chunk = os.read(self._fd, 1 << 16)
        if not chunk:
            self.closed = True
            return
        *lines, self._buffer = (self._buffer + chunk).split(b"\n")
        self._ready.extend(decode_command(line) for line in lines if line.strip())


class Heart:
    """Beats while a job runs: a thread that reports the running job's progress count every
    ``every_s`` (one thread for the worker's life: nothing to start on a job's path)."""

    def __init__(self, channel: Channel, every_s: float) -> None:
        self.job_id: str | None = None
        self.steps = 0
        self._channel = channel
        self._every = every_s
        threading.Thread(target=self._run, name="kinema-heartbeat", daemon=True).start()

    def begin(self, job_id: str) -> None:
        self.steps = 0
        self.job_id = job_id

    def end(self) -> None:
        self.job_id = None

    def _run(self) -> None:
        while True:
            time.sleep(self._every)
            job_id = self.job_id  # a late beat for a finished job is ignored by the parent
            if job_id is not None:
                self._channel.send(Heartbeat(job_id=job_id, steps=self.steps))


class Reporter:
    """A run's progress and phases as protocol events, for the worker and a Ray replica:
    progress sent when it moves by 1% (or its phase's by 5%) and at the end, every report
    counted as a step of the stall check, and a stop asked for raised (:class:`EngineCancelled`)
    at the next report."""

    def __init__(
        self,
        job_id: str,
        post: Callable[[Progress | PhaseChanged], None],
        stopped: Callable[[], bool],
        counted: Callable[[], None],
    ) -> None:
        self._job_id = job_id
        self._post = post
        self._stopped = stopped
        self._counted = counted
        self._sent = (-1.0, -1.0)

    def progress(self, value: float, within: float | None = None) -> None:
        self._counted()
        if self._stopped():
            raise EngineCancelled(self._job_id)
        value = min(max(value, 0.0), 1.0)
        inside = -1.0 if within is None else min(max(within, 0.0), 1.0)
        last, last_inside = self._sent
        if value - last >= 0.01 or abs(inside - last_inside) >= 0.05 or value >= 1.0 > last:
            self._sent = (value, inside)
            self._post(
                Progress(
                    job_id=self._job_id,
                    value=round(value, 4),
                    phase_progress=None if within is None else round(inside, 4),
                )
            )

    def phase(self, name: Phase) -> None:
        self._counted()
        self._sent = (self._sent[0], -1.0)
        self._post(PhaseChanged(job_id=self._job_id, phase=name))


def _run_one(
    channel: Channel,
    engines: dict[Task, Engine],
    task: RunTask,
    blobs: Blobs,
    inbox: Inbox,
    heart: Heart,
    encoder: EncoderSettings,
    speech: VoiceEngine | None,
) -> None:
    job_id = task.job_id
    heart.begin(job_id)

    def counted() -> None:
        heart.steps += 1

    reporter = Reporter(job_id, channel.send, lambda: _cancel_arrived(inbox, job_id), counted)
    try:
        channel.send(run_job(engines, task, blobs, reporter, encoder, speech))
    finally:
        heart.end()


def run_job(
    engines: dict[Task, Engine],
    task: RunTask,
    blobs: Blobs,
    reporter: Reporter,
    encoder: EncoderSettings,
    speech: VoiceEngine | None = None,
) -> Done | Failed | Cancelled:
    """Run ``task`` to its one outcome (the worker process's and a Ray replica's)."""
    job_id = task.job_id
    try:
        result = execute(
            engines, task, blobs, reporter.progress, reporter.phase, encoder, speech=speech
        )
    except EngineCancelled:
        return Cancelled(job_id=job_id)
    except ExecutionError as exc:
        return Failed(job_id=job_id, error=str(exc))
    except Exception as exc:  # an engine bug or OOM: this job fails, the worker lives on
        traceback.print_exc(file=sys.stderr)
        return Failed(job_id=job_id, error=f"{type(exc).__name__}: {exc}")
    return Done(job_id=job_id, result=result)


def _cancel_arrived(inbox: Inbox, job_id: str) -> bool:
    """Whether the parent cancelled ``job_id`` (or went away) since the last look; other
    commands are kept for after the job."""
    later: list[Run | Cancel] = []
    cancelled = False
    for command in inbox.poll():
        if isinstance(command, Cancel):
            cancelled = cancelled or command.job_id == job_id
        else:
            later.append(command)
    inbox.push_back(later)
    return cancelled or inbox.closed


def main(argv: list[str]) -> int:
    # Keep the real stdout for the protocol; send everything else that prints to stderr.
    channel = Channel(os.fdopen(os.dup(1), "wb", buffering=0))
    os.dup2(2, 1)
    try:
        config = decode_config(argv[0])
    except (IndexError, ValidationError) as exc:
        channel.send(Fatal(error=f"bad worker configuration: {exc}"))
        return 2
    try:
        load_plugins(list(config.plugins))
        engines, speech = load_all(config)
        blobs = open_blobs(config.storage)
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        channel.send(Fatal(error=f"could not load engines: {type(exc).__name__}: {exc}"))
        return 1
    channel.send(Ready(presets=config.presets, pid=os.getpid()))
    inbox = Inbox(sys.stdin.fileno())
    heart = Heart(channel, config.heartbeat_s)
    while (command := inbox.wait()) is not None:
        if isinstance(command, Run):
            _run_one(channel, engines, command.task, blobs, inbox, heart, config.encoder, speech)
        # A cancel for a job that is not running has nothing left to stop.
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
