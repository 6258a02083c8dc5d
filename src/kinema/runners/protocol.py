"""The runner's wire format: what a job looks like when it is sent to a runner, what comes back,
and the messages between the API process and a worker process — typed, encoded in one place.

Parent → worker (:data:`Command`): :class:`Run` (a :class:`RunTask`) and :class:`Cancel`.
Worker → parent (:data:`Event`): :class:`Ready` or :class:`Fatal` once at start-up; then per job
:class:`Progress`, :class:`PhaseChanged` and :class:`Heartbeat` while it runs, and exactly one
of :class:`Done`, :class:`Failed` or :class:`Cancelled`. A Ray Serve replica has no start-up
message (it starts on demand): each run it streams begins with :class:`Started`. One JSON object
per line; :func:`encode` writes any message, :func:`decode_event` / :func:`decode_command` read
them back (and refuse anything that is not exactly a known message).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, TypeAdapter

from kinema.engines.registry import LoadOptions
from kinema.jobs.spec import JobSpec
from kinema.media.encoding import EncoderSettings
from kinema.storage.target import StorageTarget

PROTOCOL_VERSION: Literal[1] = 1


class _Message(BaseModel):
    model_config = ConfigDict(
        frozen=True, extra="forbid", ser_json_bytes="base64", val_json_bytes="base64"
    )


class RunTask(_Message):
    """One run of a job: the spec it was admitted with, plus what this run carries."""

    job_id: str
    spec: JobSpec
    inline: dict[str, bytes] = {}
    """Inputs that travel with the run instead of through the storage, by storage key (the
    small inputs of a sync job handed straight to a local worker)."""
    deadline: float | None = None
    """Wall-clock time (UNIX seconds) by which the run must have ended (a sync request's
    timeout); the runner's own run limit applies too."""


class RunResult(_Message):
    """A finished run: its output is already in the storage under ``output_key``."""

    output_key: str
    content_type: str
    metadata: dict[str, JsonValue] = {}
    """For ``x-output-metadata``: width, height, fps, duration, has_audio, engine facts."""
    inference_time: float = 0.0
    startup_time: float = 0.0
    """How long the run waited for a worker to come up for it (a Ray replica started from
    zero, its engines loaded); 0 when one was ready."""


class WorkerConfig(_Message):
    """A worker process's start-up configuration (its only command-line argument)."""

    protocol: Literal[1] = PROTOCOL_VERSION
    presets: tuple[str, ...]
    load_options: LoadOptions
    plugins: tuple[str, ...] = ()
    storage: StorageTarget
    heartbeat_s: float = Field(1.0, gt=0)
    """How often the worker says it is alive while it runs a job."""
    encoder: EncoderSettings = EncoderSettings()
    """How the worker encodes its MP4s (``[media]``)."""
    speech_preset: str | None = None
    """The speech preset loaded beside a video engine that follows audio (``voice_ids``)."""


# Parent → worker ------------------------------------------------------------------------------


class Run(_Message):
    op: Literal["run"] = "run"
    task: RunTask


class Cancel(_Message):
    op: Literal["cancel"] = "cancel"
    job_id: str


Command = Annotated[Run | Cancel, Field(discriminator="op")]


# Worker → parent ------------------------------------------------------------------------------


class Ready(_Message):
    event: Literal["ready"] = "ready"
    presets: tuple[str, ...]
    pid: int


class Fatal(_Message):
    event: Literal["fatal"] = "fatal"
    error: str


class Started(_Message):
    """A replica took the run; ``cold``: it was started for it (its first run), ``load_s``
    after loading its engines."""

    event: Literal["started"] = "started"
    job_id: str
    cold: bool
    load_s: float = Field(0.0, ge=0)


Phase = Literal["loading", "denoising", "decoding", "encoding", "storing"]
"""Where a run is: what its progress is spent on."""


class Progress(_Message):
    """The run's overall progress; ``phase_progress``: how far into its current phase."""

    event: Literal["progress"] = "progress"
    job_id: str
    value: float = Field(ge=0, le=1)
    phase_progress: float | None = Field(None, ge=0, le=1)


class PhaseChanged(_Message):
    event: Literal["phase"] = "phase"
    job_id: str
    phase: Phase


class Heartbeat(_Message):
    """The worker is alive; ``steps`` counts the engine's progress calls so far (a run whose
    count stops moving is stalled even though its process answers)."""

    event: Literal["heartbeat"] = "heartbeat"
    job_id: str
    steps: int


class Done(_Message):
    event: Literal["done"] = "done"
    job_id: str
    result: RunResult


class Failed(_Message):
    event: Literal["failed"] = "failed"
    job_id: str
    error: str


class Cancelled(_Message):
    event: Literal["cancelled"] = "cancelled"
    job_id: str


AnyEvent = Ready | Fatal | Started | Progress | PhaseChanged | Heartbeat | Done | Failed | Cancelled
Event = Annotated[AnyEvent, Field(discriminator="event")]
JobEvent = Started | Progress | PhaseChanged | Heartbeat | Done | Failed | Cancelled
"""The events about one job."""

_EVENTS: TypeAdapter[AnyEvent] = TypeAdapter(Event)
_COMMANDS: TypeAdapter[Run | Cancel] = TypeAdapter(Command)


def encode(message: _Message) -> bytes:
    """One line of the protocol."""
    return message.__pydantic_serializer__.to_json(message) + b"\n"


def decode_event(line: bytes) -> AnyEvent:
    return _EVENTS.validate_json(line)


def decode_command(line: bytes) -> Run | Cancel:
    return _COMMANDS.validate_json(line)


def decode_config(text: str) -> WorkerConfig:
    return WorkerConfig.model_validate_json(text)
