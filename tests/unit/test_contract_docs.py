"""Every contract parameter is documented with the tests that prove it: each field of each
endpoint's request model has a row in docs/engines.md, "Contract parameters → tests", and every
test that table cites exists. The request models are the source (CONTRACT.md lives outside the
repository); a new parameter cannot land undocumented."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from kinema.api.endpoints import ENDPOINTS

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
SECTION = "## Contract parameters → tests"
CITED = re.compile(r"`(tests/[\w/]+\.py)::(test_\w+)`")


def _section() -> str:
    doc = (ROOT / "docs" / "engines.md").read_text()
    assert SECTION in doc, f"docs/engines.md has no section {SECTION!r}"
    return doc.split(SECTION, 1)[1].split("\n## ", 1)[0]


def _rows() -> list[list[str]]:
    """The table's body rows as cells (header and separator left out)."""
    lines = [line.strip() for line in _section().splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


def test_every_request_parameter_has_a_row_with_tests() -> None:
    rows = _rows()
    documented = {(row[0], row[1]) for row in rows}
    expected = {
        (f"`{slug}`", f"`{name}`")
        for slug, endpoint in ENDPOINTS.items()
        for name in endpoint.request_model.model_fields
    }
    assert not expected - documented, f"parameters missing: {sorted(expected - documented)}"
    assert not documented - expected, f"rows for no parameter: {sorted(documented - expected)}"
    assert all(len(row) == 4 for row in rows), "each row: endpoint | parameter | what | tests"
    untested = [row[:2] for row in rows if not CITED.search(row[3])]
    assert not untested, f"rows citing no test: {untested}"


def test_every_cited_test_exists() -> None:
    missing = []
    for path, name in CITED.findall(_section()):
        file = ROOT / path
        tree = ast.parse(file.read_text()) if file.is_file() else None
        functions = {
            node.name
            for node in ast.walk(tree or ast.Module(body=[], type_ignores=[]))
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        }
        if name not in functions:
            missing.append(f"{path}::{name}")
    assert not missing, f"docs/engines.md cites tests that do not exist: {missing}"
