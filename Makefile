# One check command, exactly what CI runs (.ci/run calls `make check`).
PY ?= .venv/bin/python
RUFF = $(PY) -m ruff
MYPY = $(PY) -m mypy
PYTEST = $(PY) -m pytest

.PHONY: setup check lint typecheck test serve openapi bench

setup:  ## create .venv with everything (CPU torch first, then the project)
	bash scripts/setup

lint:
	$(RUFF) check src tests bench examples
	$(RUFF) format --check src tests bench examples

typecheck:
	$(MYPY)

test:
	$(PYTEST) -q

check: lint typecheck test

serve:
	.venv/bin/kinema serve --preset tiny

openapi:
	$(PY) -m kinema.api.openapi > docs/openapi.json

bench:
	$(PY) bench/gateway.py
