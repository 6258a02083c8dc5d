"""The served API, fuzzed from its own OpenAPI document (``/openapi.json``): whatever a client
sends to any operation — odd slugs, wrong types, out-of-range values, junk images, bad
signatures — the answer is a 2xx or a 4xx ``{"error"}``, never a 5xx. Deterministic (derandomized
Hypothesis), bounded: EXAMPLES cases per operation against ``kinema serve --preset static``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error

from tests.fixtures.served import Server, serving

# One served process per module, on its own SQLite database.
pytestmark = [pytest.mark.integration, pytest.mark.embedded_only, pytest.mark.timeout(300)]
EXAMPLES = 40


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving(tmp_path_factory.mktemp("fuzz"), "static", credits=1000) as server:
        yield server


def test_no_generated_request_gets_a_server_error(server: Server) -> None:
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 11  # each model's v1 and v2, requests, files, voices, credits
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
            case.call_and_validate(
                base_url=server.url,
                headers={"x-api-key": server.key},
                checks=[not_a_server_error],
                timeout=60,
            )

        call()
