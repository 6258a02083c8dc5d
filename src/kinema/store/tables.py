"""The schema, in one place. Times are UNIX seconds (float) and money is integer micro-credits,
so SQLite and PostgreSQL behave the same. Alembic migrations in ``migrations/`` create it; a test
checks they match this metadata."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("name", String(200), nullable=False, default=""),
    Column("prefix", String(32), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("balance_micros", BigInteger, nullable=False, default=0),
    Column("rate_limit", String(200), nullable=True),
    Column("models", JSON, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("revoked_at", Float, nullable=True),
)

credit_ledger = Table(
    "credit_ledger",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("key_id", String(40), ForeignKey("api_keys.id"), nullable=False, index=True),
    Column("job_id", String(40), nullable=True),
    Column("kind", String(16), nullable=False),
    Column("amount_micros", BigInteger, nullable=False),
    Column("balance_after_micros", BigInteger, nullable=False),
    Column("note", String(200), nullable=False, default=""),
    Column("created_at", Float, nullable=False),
    # One reservation and at most one refund per job: a retried finalisation cannot pay twice.
    UniqueConstraint("job_id", "kind", name="uq_credit_ledger_job_kind"),
)

jobs = Table(
    "jobs",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("key_id", String(40), ForeignKey("api_keys.id"), nullable=False),
    Column("model", String(100), nullable=False),
    Column("status", String(16), nullable=False),
    Column("params", JSON, nullable=False),
    Column("inputs", JSON, nullable=False),
    Column("price_micros", BigInteger, nullable=False),
    Column("sync", Boolean, nullable=False, default=False),
    Column("idempotency_key", String(200), nullable=True),
    Column("request_hash", String(64), nullable=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("lease_owner", String(80), nullable=True),
    Column("lease_expires_at", Float, nullable=True),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    Column("progress", Float, nullable=True),
    # Where a running job is (loading, denoising, decoding, encoding, storing) and how far
    # into that phase; written with its progress by lease renewal.
    Column("phase", String(16), nullable=True),
    Column("phase_progress", Float, nullable=True),
    Column("output_key", String(300), nullable=True),
    Column("output_content_type", String(100), nullable=True),
    Column("output_metadata", JSON, nullable=True),
    Column("error", Text, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("started_at", Float, nullable=True),
    Column("finished_at", Float, nullable=True),
    Column("inference_time", Float, nullable=True),
    Column("startup_time", Float, nullable=True),
    # The replica holding a sync request's connection (its client is answered from there only).
    Column("waiter", String(80), nullable=True),
    Column("expires_at", Float, nullable=False),
    Column("output_expires_at", Float, nullable=True),
    UniqueConstraint("key_id", "idempotency_key", name="uq_jobs_key_idempotency"),
    Index("ix_jobs_status_created", "status", "created_at"),
    Index("ix_jobs_expires_at", "expires_at"),
)

webhooks = Table(
    "webhooks",
    metadata,
    Column("job_id", String(40), ForeignKey("jobs.id"), primary_key=True),
    Column("url", Text, nullable=False),
    Column("base_url", Text, nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", Float, nullable=True),
    Column("delivered_at", Float, nullable=True),
    Column("last_error", Text, nullable=True),
    Index("ix_webhooks_pending", "delivered_at", "next_attempt_at"),
)
"""A request's webhook, written with the job: delivered once the job has ended (an outbox)."""

voices = Table(
    "voices",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("key_id", String(40), ForeignKey("api_keys.id"), nullable=False, index=True),
    Column("name", String(40), nullable=False, default=""),
    Column("sample_key", String(300), nullable=False),
    Column("container", String(16), nullable=False),
    Column("duration_s", Float, nullable=False),
    Column("created_at", Float, nullable=False),
)
