"""The served API, fuzzed from its own OpenAPI document (``/openapi.json``): whatever a client
sends to any operation — odd slugs, wrong types, out-of-range values, junk images, bad
signatures — the answer is a 2xx or a 4xx ``{"error"}`` that matches the schema documented for
that operation and status, never a 5xx. Deterministic (derandomized Hypothesis), bounded: at
most EXAMPLES cases per operation, at least CASES in all, against ``kinema serve --preset
static`` with a key whose rate limit no case reaches (a 429 would answer for the body)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tests.fixtures.served import Server

# One served process per module, on its own SQLite database.
pytestmark = [pytest.mark.integration, pytest.mark.embedded_only, pytest.mark.timeout(300)]
EXAMPLES = 160
CASES = 2000
CHECKS = [
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
    content_type_conformance,
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("fuzz"), "static")
    server.key = server.cli(
        "keys", "create", "--name", "fuzz", "--credits", "1000", "--rate-limit", "1000000/minute"
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_no_generated_request_gets_a_server_error_or_an_undocumented_answer(
    server: Server,
) -> None:
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 13  # each model's v1 and v2, requests, files, voices, credits
    statuses: Counter[int] = Counter()
    per_operation: Counter[str] = Counter()
    started = time.monotonic()
    with requests.Session() as session:
        for operation in operations:

            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                derandomize=True,
                database=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy())
            def call(case: schemathesis.Case) -> None:
                response = case.call(
                    base_url=server.url,
                    session=session,
                    headers={"x-api-key": server.key},
                    timeout=60,
                )
                statuses[response.status_code] += 1
                per_operation[operation.label] += 1  # noqa: B023 (called in this iteration)
                case.validate_response(response, checks=CHECKS)

            call()
    total = sum(statuses.values())
    print(
        f"\n{total} cases over {len(operations)} operations in {time.monotonic() - started:.1f} s;"
        f" answers {dict(sorted(statuses.items()))}"
    )
    assert total >= CASES, per_operation
    assert not [s for s in statuses if s >= 500]
    assert statuses[429] == 0  # every case reached the checks of its body
