"""Print the OpenAPI document (committed as docs/openapi.json; a test diffs it)."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from kinema.api.app import create_app
from kinema.settings import Settings


def render() -> str:
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(Settings(data_dir=Path(tmp)))
        return json.dumps(app.openapi(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
