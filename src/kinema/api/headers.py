"""The response headers every generation answer carries (CONTRACT.md)."""

from __future__ import annotations

import json

from kinema.billing.keys import from_micros
from kinema.billing.ratelimit import RateState
from kinema.jobs.models import Job


def generation_headers(job: Job, balance_micros: int, rate: RateState) -> dict[str, str]:
    return {
        "x-request-id": job.id,
        "x-remaining-credits": str(round(from_micros(balance_micros), 6)),
        "x-generation-time": f"{job.inference_time or 0.0:.3f}",
        "x-output-metadata": json.dumps(job.output_metadata or {}, separators=(",", ":")),
        **rate.headers(),
    }
