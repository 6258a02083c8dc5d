"""One settings object, built once (CLI or app factory) and passed down.

Sources, highest first: explicit arguments, ``KINEMA_*`` environment variables (nested sections
use ``__``, e.g. ``KINEMA_SERVER__PORT=9000``), a TOML file (``KINEMA_CONFIG`` or ``--config``),
defaults.
Every field here is documented in docs/configuration.md; a test fails when one is not.
"""

from __future__ import annotations

import difflib
import os
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from kinema.media.encoding import EncoderSettings


class SettingsError(ValueError):
    """A setting is unknown or invalid: one line that names it (and the nearest known one)."""


class _Section(BaseModel):
    # A mistyped key is an error, never silently ignored.
    model_config = ConfigDict(extra="forbid")


class ServerSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    public_url: str | None = None
    """Base URL clients reach the API at (used in poll/result/file URLs). Default: the request's."""
    sync_timeout_s: float = Field(900.0, gt=0)
    """How long a v1 (sync) request waits for its generation before answering 504."""
    max_body_mb: float = Field(70.0, gt=0)
    """Largest request body read (MB); a longer one is refused with 413 while it is read, never
    buffered whole. Inline (base64) images count toward it: one image at the 50 MB input cap
    takes ~67 MB as base64; send larger sets of inputs by URL."""
    metrics: bool = True
    """Serve Prometheus metrics at ``/metrics``, without a key (scrapers have none; no label
    carries a key). Off: no ``/metrics`` route and nothing recorded."""
    log_format: Literal["text", "json"] = "text"
    """``kinema serve``'s log lines: uvicorn's text, or one JSON object a line (time, level,
    logger, message and, on a request's lines, its request id)."""


class DatabaseSettings(_Section):
    url: str | None = None
    """Default: ``sqlite:///<data_dir>/kinema.db``. PostgreSQL:
    ``postgresql+asyncpg://user@host/db``."""
    echo: bool = False


S3_MAX_URL_TTL_S = 7 * 86_400
"""The longest an S3 presigned URL (signature version 4) may be valid."""


class StorageSettings(_Section):
    backend: Literal["local", "s3"] = "local"
    """``local``: a directory on this machine, its files served by the API through signed URLs.
    ``s3``: an S3-compatible bucket, its outputs downloaded by clients through presigned URLs."""
    path: Path | None = None
    """Local output directory. Default: ``<data_dir>/files``."""
    bucket: str | None = Field(None, validate_default=True)
    """The S3 bucket (required with ``backend = "s3"``); it must exist."""
    endpoint_url: str | None = None
    """The S3 API of an S3-compatible server (SeaweedFS, MinIO, R2, …), e.g.
    ``http://127.0.0.1:8333``. Default: ``AWS_ENDPOINT_URL``, else AWS's for the region."""
    prefix: str = ""
    """Key prefix inside the bucket (e.g. ``kinema``: objects are ``kinema/outputs/…``), for
    deployments sharing one bucket."""
    region: str | None = None
    """Default: ``AWS_REGION``, else ``AWS_DEFAULT_REGION``, else ``us-east-1``."""
    # The secret first: the key ID's validator checks the pair and names the key ID, so a
    # settings error never echoes the secret.
    secret_access_key: SecretStr | None = None
    """With ``access_key_id``; both absent: the standard AWS sources (``AWS_ACCESS_KEY_ID`` and
    ``AWS_SECRET_ACCESS_KEY``, web identity, instance metadata)."""
    access_key_id: str | None = Field(None, validate_default=True)
    """Not a secret: it appears in every presigned URL."""
    url_ttl_s: int = Field(3600, gt=0, validate_default=True)
    """Lifetime of signed file URLs handed to clients (S3: at most 7 days)."""

    @field_validator("bucket")
    @classmethod
    def _bucket_for_s3(cls, bucket: str | None, info: ValidationInfo) -> str | None:
        if info.data.get("backend") == "s3" and not bucket:
            raise ValueError('storage.backend = "s3" needs storage.bucket (an existing bucket)')
        return bucket

    @field_validator("access_key_id")
    @classmethod
    def _key_pair(cls, key_id: str | None, info: ValidationInfo) -> str | None:
        if "secret_access_key" in info.data and (key_id is None) != (
            info.data["secret_access_key"] is None
        ):
            raise ValueError(
                "give storage.access_key_id and storage.secret_access_key together, or neither "
                "(then the AWS environment variables apply)"
            )
        return key_id

    @field_validator("url_ttl_s")
    @classmethod
    def _presignable(cls, ttl_s: int, info: ValidationInfo) -> int:
        if info.data.get("backend") == "s3" and ttl_s > S3_MAX_URL_TTL_S:
            raise ValueError(f"S3 presigned URLs last at most {S3_MAX_URL_TTL_S} s (7 days)")
        return ttl_s

    @field_validator("prefix")
    @classmethod
    def _prefix_path(cls, prefix: str) -> str:
        prefix = prefix.strip("/")
        if prefix and any(part in ("", ".", "..") for part in prefix.split("/")):
            raise ValueError("a key prefix is names joined by /, without empty, . or .. parts")
        return prefix


class RetentionSettings(_Section):
    request_ttl_s: int = Field(86_400, ge=3600)
    """How long status/result of a request stay readable (the contract guarantees ≥ 1 hour)."""
    output_ttl_s: int = Field(7 * 86_400, ge=3600)
    """How long output media stay downloadable."""
    cleanup_interval_s: float = Field(300.0, gt=0)


class JobSettings(_Section):
    lease_s: float = Field(60.0, gt=0)
    """A claimed job's lease; the runner renews it while working. An expired lease means the runner
    died: the job is retried."""
    max_attempts: int = Field(3, ge=1)
    shutdown_grace_s: float = Field(30.0, ge=0)
    """On shutdown, how long running jobs may take to finish before they are left to their
    lease (and retried by the next process)."""
    poll_interval_s: float = Field(0.5, gt=0)
    """How often the job store is polled for changes no wake-up announced (a fallback: with
    ``relay`` on PostgreSQL, other replicas' submits, finishes and cancels wake at once)."""
    relay: bool = True
    """Carry wake-ups between replicas through the store's notifications (PostgreSQL
    ``LISTEN/NOTIFY`` on one connection per replica). Off: replicas see each other's changes
    by polling only (e.g. behind a transaction-pooling proxy that does not carry ``LISTEN``).
    No effect on SQLite."""
    liveness: bool = True
    """Know at once when a replica sharing the store stops (SIGKILL, crash): each holds a lock
    that ends with its process — a file lock next to the SQLite database, a session advisory
    lock on PostgreSQL (one connection per replica). The jobs it ran are retried without
    waiting for ``lease_s``; the sync requests whose connections it held are failed and
    refunded (their clients cannot be answered). Off (e.g. behind a transaction-pooling proxy,
    where session locks do not hold): leases alone decide."""
    run_timeout_s: float = Field(3600.0, gt=0)
    """Longest a run may take; past it the worker is killed (and restarted) and the job FAILED
    and refunded."""
    run_timeout_overrides: dict[str, float] = {}
    """``run_timeout_s`` per engine preset name, e.g. ``{"flux2-klein-4b" = 120}``."""
    stall_timeout_s: float = Field(600.0, gt=0)
    """A run that reports no progress (denoising step, encoded frame) for this long is stalled:
    its worker is killed and restarted, the job FAILED and refunded."""
    cancel_grace_s: float = Field(30.0, gt=0)
    """A running job whose cancel the engine has not honoured within this long is stopped by
    killing its worker (then restarted); the job ends cancelled and refunded."""


class WebhookSettings(_Section):
    retry_s: list[float] = [5.0, 30.0, 120.0, 600.0, 1800.0]
    """Waits before each retry of a webhook the receiver did not take (not 2xx, or no answer);
    after the last the delivery is given up."""
    timeout_s: float = Field(10.0, gt=0)
    """How long one delivery attempt may take."""
    poll_interval_s: float = Field(1.0, gt=0)
    """How often each API process looks for webhooks due."""


class BillingSettings(_Section):
    image_price: dict[str, float] = {"1K": 0.035, "2K": 0.07}
    """Price per image by resolution."""
    video_price_per_s: float = 0.084
    """Price per second of video without audio."""
    video_audio_surcharge_per_s: float = 0.042
    video_voice_surcharge_per_s: float = 0.028
    default_credits: float = 0.0
    """Credits a key created without ``--credits`` starts with."""
    key_cache_s: float = Field(1.0, ge=0)
    """How long an API process reuses a key it authenticated before reading it again: a key
    revoked, re-scoped or re-limited by another process takes effect within this time. 0: read
    on every request. (Credits are never cached: every charge is checked in the database.)"""


class RateLimitSettings(_Section):
    default: str = "120/minute"
    """Default per-key limit (``limits`` notation, e.g. ``10/second;600/hour``)."""
    storage_url: str = "memory://"
    """``memory://`` (one process) or ``redis://host:6379/0`` (shared by API replicas)."""
    key_prefix: str = "kinema"
    """Prefix of the counters' Redis keys (deployments sharing one Redis use different ones)."""


class FetchSettings(_Section):
    max_bytes: int = Field(50 * 1024 * 1024, gt=0)
    timeout_s: float = Field(30.0, gt=0)
    allow_hosts: list[str] = []
    """Hosts, IPs or CIDR networks that input URLs may reach even though they are private,
    loopback or link-local. Empty: only public addresses."""
    max_pixels: int = Field(40_000_000, gt=0)
    max_request_pixels: int = Field(120_000_000, gt=0)
    """All of one request's input images together (start, end, element and reference images):
    bounds the memory a request can make the API and the worker spend decoding."""


class PoolSettings(_Section):
    """One worker pool: workers that each load ``preset`` (and what it needs, e.g. the image
    engine that composes a video's elements) and run its jobs, one at a time each."""

    preset: str
    workers: int = Field(1, ge=1)
    devices: list[int] = []
    """GPU indices the pool's workers use, ``gpus`` of the preset per worker in order. Empty:
    each worker is placed on the GPUs with the most memory left, then the fewest workers."""
    run_timeout_s: float | None = Field(None, gt=0)
    """Overrides ``jobs.run_timeout_s`` for this pool's jobs."""


class EngineSettings(_Section):
    preset: Literal["tiny", "static", "production", "custom"] = "tiny"
    """Shorthand: ``tiny`` (tiny random-weight diffusers models, CPU), ``static`` (zero-cost
    engines, no torch), ``production`` (ltx2.5-distilled + flux2-klein-4b; needs their weights)
    or ``custom`` (use ``video_preset``/``image_preset``)."""
    video_preset: str = "tiny-ltx2"
    image_preset: str = "tiny-flux2-klein"
    speech_preset: str | None = None
    """The speech engine (``tiny-vibevoice``, ``voxcpm2``) that the workers of a video engine
    that follows audio load beside it, to speak ``voice_ids``. None: ``tiny-vibevoice`` beside
    a test preset, ``voxcpm2`` beside a production one. ``"none"``: no speech engine (nothing
    more to install or download); ``voice_ids`` are then a 400."""
    models_dir: Path | None = None
    """Where weights live (and tiny presets build theirs). Default: ``<data_dir>/models``."""
    device: str = "auto"
    dtype: str = "auto"
    cpu_offload: bool = False
    vae_tiling: bool = False
    num_inference_steps: int | None = None
    plugins: list[str] = []
    """Modules imported (in the API and worker processes) before presets are looked up; each
    registers its presets with ``kinema.engines.registry.register``, as the built-ins do."""
    workers: int = Field(1, ge=0)
    """Worker processes per pool in the short form (one pool per task, see ``pools``); each
    runs one job at a time. 0: an API-only replica that runs no jobs (other processes sharing
    the database run them)."""
    pools: list[PoolSettings] = []
    """The long form: one pool per task, each with its preset, workers and GPUs. Given, it
    names the presets (``preset``/``video_preset``/``image_preset`` are then ignored)."""
    gpu_memory_gib: list[float] | None = None
    """The GPUs' memory (GiB), one entry per device, for placement. Default: asked of
    ``nvidia-smi``; none found means the workers run on the CPU."""
    startup_timeout_s: float = Field(600.0, gt=0)
    max_worker_rss_mb: float | None = Field(None, gt=0)
    """A worker process whose resident memory exceeds this many MB is killed (its job FAILED
    and refunded) and restarted. None: no limit."""

    def resolved_presets(self) -> tuple[str, ...]:
        """The presets serving the tasks: the pools' when pools are given, else (video preset,
        image preset) after applying the ``preset`` shorthand."""
        if self.pools:
            return tuple(pool.preset for pool in self.pools)
        if self.preset == "custom":
            return self.video_preset, self.image_preset
        if self.preset == "static":
            return "static-video", "static-image"
        if self.preset == "production":
            return "ltx2.5-distilled", "flux2-klein-4b"
        return "tiny-ltx2", "tiny-flux2-klein"


class RunnerSettings(_Section):
    """Where the engines run: worker processes on this machine, or a Ray Serve cluster."""

    backend: Literal["local", "ray"] = "local"
    """``local``: worker processes of this API process (``engines.workers``, ``engines.pools``).
    ``ray``: one Ray Serve deployment per pool on the cluster at ``ray_address``, its replicas
    started on demand and released when idle (needs ``pip install "kinema[ray]"``)."""
    ray_address: str = "auto"
    """The Ray cluster's GCS address (``10.0.0.5:6379``), or ``auto`` (the cluster this machine
    belongs to, or ``RAY_ADDRESS``). The API process joins the cluster as a driver; Ray Client
    (``ray://``) cannot carry the streamed runs and is refused."""
    app_name: str = Field("kinema", pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
    """Prefix of the Serve applications, one per pool (``kinema-image-to-video``,
    ``kinema-image-to-image``); installations sharing a cluster use different ones."""
    max_replicas: int = Field(1, ge=1)
    """Most replicas of each pool's deployment (one job at a time each)."""
    downscale_delay_s: float = Field(300.0, ge=0)
    """How long a pool's replicas stay idle before they are released (down to zero: its GPUs
    freed; the next job waits for a cold start)."""
    replica_cpus: float = Field(1.0, ge=0)
    """CPUs each replica reserves on the cluster."""
    call_timeout_s: float = Field(30.0, gt=0)
    """Deadline of each control call to the cluster (connect, deploy, look-up, status); a run
    waits ``engines.startup_timeout_s`` at most for a replica to come up."""
    deploy_on_start: bool = True
    """At start, deploy the pools' applications that are not on the cluster yet (existing ones
    are used as they are; ``kinema ray deploy`` updates them). Off: they must be deployed."""

    @field_validator("ray_address")
    @classmethod
    def _not_ray_client(cls, address: str) -> str:
        if address.startswith("ray://"):
            raise ValueError(
                "Ray Client (ray://) cannot stream runs from Serve; give the cluster's GCS "
                "address (host:6379) or auto"
            )
        return address


class MediaSettings(EncoderSettings):
    """How outputs are encoded (``[media]``): the MP4's H.264 encoder, its fields documented on
    :class:`~kinema.media.encoding.EncoderSettings` (unknown keys refused like any section's).
    The workers get them as their :class:`~kinema.runners.protocol.WorkerConfig`'s ``encoder``."""

    def encoder(self) -> EncoderSettings:
        """The encoder's fields alone, for the workers."""
        return EncoderSettings.model_validate(
            self.model_dump(include=set(EncoderSettings.model_fields))
        )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="KINEMA_", env_nested_delimiter="__", extra="forbid", toml_file=None
    )

    data_dir: Path = Path("./kinema-data")
    secret_key: SecretStr | None = None
    """HMAC key for API-key hashes and signed URLs. Default: generated once into
    ``<data_dir>/secret.key``. Set it explicitly when several API replicas share a database."""
    server: ServerSettings = ServerSettings()
    database: DatabaseSettings = DatabaseSettings()
    storage: StorageSettings = StorageSettings()
    retention: RetentionSettings = RetentionSettings()
    jobs: JobSettings = JobSettings()
    webhooks: WebhookSettings = WebhookSettings()
    billing: BillingSettings = BillingSettings()
    rate_limit: RateLimitSettings = RateLimitSettings()
    fetch: FetchSettings = FetchSettings()
    engines: EngineSettings = EngineSettings()
    runner: RunnerSettings = RunnerSettings()
    media: MediaSettings = MediaSettings()
    retired_models: list[str] = []
    """Slugs an operator has retired: they answer 410."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The TOML source reads model_config["toml_file"], set by load_settings (None: no file).
        return init_settings, env_settings, TomlConfigSettingsSource(settings_cls)

    # Derived locations ---------------------------------------------------------------------------

    @property
    def database_url(self) -> str:
        return self.database.url or f"sqlite:///{self.data_dir / 'kinema.db'}"

    @property
    def storage_path(self) -> Path:
        return self.storage.path or self.data_dir / "files"

    @property
    def models_dir(self) -> Path:
        return self.engines.models_dir or self.data_dir / "models"

    def secret(self) -> bytes:
        """The HMAC secret; generated on first use into the data directory when not configured."""
        if self.secret_key is not None:
            return self.secret_key.get_secret_value().encode()
        path = self.data_dir / "secret.key"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(os.urandom(32).hex())
        return path.read_text().strip().encode()


ENV_PREFIX = "KINEMA_"
NOT_SETTINGS = frozenset({"KINEMA_CONFIG", "KINEMA_URL", "KINEMA_KEY"})
"""``KINEMA_*`` variables that are not settings: the settings file's path, and the client's
server URL and key (read by ``kinema.client`` and the generation commands)."""


def load_settings(config: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings; ``config`` names a TOML file (else ``$KINEMA_CONFIG``, if set).
    Raises :class:`SettingsError` for an unknown or invalid setting, from any source."""
    check_environment(os.environ)
    env_path = os.environ.get("KINEMA_CONFIG")
    path = config or (Path(env_path) if env_path else None)
    try:
        if path is None:
            return Settings(**overrides)

        class FileSettings(Settings):
            model_config = SettingsConfigDict(toml_file=path)

        return FileSettings(**overrides)
    except ValidationError as exc:
        raise SettingsError(describe(exc, f" in {path}" if path else "")) from None
    # (Unknown environment variables were refused above, so an unknown key here is the file's
    # or an argument's.)


def check_environment(environ: Mapping[str, str]) -> None:
    """Every ``KINEMA_*`` variable must name a setting (nested sections joined by ``__``)."""
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper in NOT_SETTINGS:
            continue
        path = name[len(ENV_PREFIX) :].lower().split("__")
        if not _known_path(Settings, path):
            dotted = ".".join(path)
            raise SettingsError(
                f"unknown setting {name} (= {dotted}){_nearest(dotted)}; "
                "nested sections are joined by __, e.g. KINEMA_SERVER__PORT"
            )


def describe(exc: ValidationError, where: str = "") -> str:
    """The first problem of ``exc`` in one line, naming the setting."""
    error = exc.errors()[0]
    dotted = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        return f"unknown setting {dotted}{where}{_nearest(dotted)}"
    return f"setting {dotted}: {error['msg']} (got {error.get('input')!r})"


def _known_path(model: type[BaseModel], path: list[str]) -> bool:
    head, *rest = path
    field = model.model_fields.get(head)
    if field is None:
        return False
    if not rest:
        return True
    annotation = field.annotation
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _known_path(annotation, rest)
    return typing.get_origin(annotation) is dict  # a table: any key


def _known_names(model: type[BaseModel], prefix: str = "") -> list[str]:
    names = []
    for name, field in model.model_fields.items():
        dotted = prefix + name
        names.append(dotted)
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names += _known_names(annotation, dotted + ".")
    return names


def _nearest(dotted: str) -> str:
    names = _known_names(Settings)
    found = difflib.get_close_matches(dotted, names, n=1, cutoff=0.6)
    if not found:  # a mistyped section: compare the last part within every section
        last = dotted.rsplit(".", 1)[-1]
        ends = {name.rsplit(".", 1)[-1]: name for name in names}
        found = [ends[m] for m in difflib.get_close_matches(last, list(ends), n=1, cutoff=0.75)]
    return f" (did you mean {found[0]}?)" if found else ""
