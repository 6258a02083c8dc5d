"""Architecture rules that a test can hold: the API process never imports torch/diffusers, every
route authenticates unless listed public, every setting is documented, the committed OpenAPI
document is current."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute
from pydantic import BaseModel

from kinema.api.app import PUBLIC_ROUTES, create_app
from kinema.settings import Settings

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


def test_api_process_never_imports_torch_or_diffusers(tmp_path: Path) -> None:
    code = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'diffusers', 'transformers', 'accelerate'):
            raise ImportError('blocked in the API process: ' + name)
        return None
sys.meta_path.insert(0, Block())
from kinema.api.app import create_app
from kinema.settings import Settings
from kinema.engines.registry import presets
import kinema.cli
app = create_app(Settings(data_dir={str(tmp_path)!r}))
print(len(app.routes), len(presets()))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr


def test_every_route_authenticates_or_is_listed_public(tmp_path: Path) -> None:
    """Calls each non-public route without a key and expects 401 (or 404/405 for the route
    shape), so a new route that forgets authentication fails here."""
    from fastapi.testclient import TestClient

    app = create_app(Settings(data_dir=tmp_path, engines={"preset": "static"}))
    with TestClient(app) as client:
        for route in app.routes:
            if not isinstance(route, APIRoute) or route.path in PUBLIC_ROUTES:
                continue
            path = route.path.replace("{slug}", "kling-3-image2image").replace(
                "{request_id}", "abc"
            )
            for method in route.methods:
                r = client.request(method, path, json={})
                assert r.status_code == 401, (method, path, r.status_code, r.text)


def _fields(model: type[BaseModel], prefix: str = "") -> list[str]:
    names = []
    for name, field in model.model_fields.items():
        annotation: Any = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names += _fields(annotation, f"{prefix}{name}.")
        else:
            names.append(prefix + name)
    return names


def test_every_setting_is_documented() -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text()
    missing = [name for name in _fields(Settings) if f"`{name}`" not in doc]
    assert not missing, f"settings missing from docs/configuration.md: {missing}"


def test_every_error_status_is_documented() -> None:
    import kinema.errors as errors

    doc = (ROOT / "docs" / "api.md").read_text()
    for obj in vars(errors).values():
        if isinstance(obj, type) and issubclass(obj, errors.KinemaError):
            assert f"`{obj.__name__}`" in doc, obj.__name__
            assert str(obj.status_code) in doc


def test_engine_presets_are_documented() -> None:
    from kinema.engines.registry import presets

    doc = (ROOT / "docs" / "engines.md").read_text()
    built_in = [p for p in presets() if p.loader.startswith("kinema.")]  # not test plugins
    missing = [p.name for p in built_in if f"`{p.name}`" not in doc]
    assert not missing, missing


def test_openapi_document_is_committed_and_current(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path))
    current = json.dumps(app.openapi(), indent=2, sort_keys=True) + "\n"
    committed = ROOT / "docs" / "openapi.json"
    assert committed.exists() and committed.read_text() == current, (
        "docs/openapi.json is stale: run `python -m kinema.api.openapi > docs/openapi.json`"
    )


def test_openapi_documents_each_model_endpoint_with_its_body(tmp_path: Path) -> None:
    from kinema.api.endpoints import ENDPOINTS

    doc = create_app(Settings(data_dir=tmp_path)).openapi()
    paths, models = doc["paths"], doc["components"]["schemas"]
    assert "/v1/{slug}" not in paths and "/v2/{slug}" not in paths
    for endpoint in ENDPOINTS.values():
        name = endpoint.request_model.__name__
        for version in ("v1", "v2"):
            body = paths[f"/{version}/{endpoint.slug}"]["post"]["requestBody"]
            assert body["required"] is True
            assert body["content"]["application/json"]["schema"] == {
                "$ref": f"#/components/schemas/{name}"
            }
        assert models[name]["properties"].keys() == endpoint.request_model.model_fields.keys()
        v1_answers = paths[f"/v1/{endpoint.slug}"]["post"]["responses"]["200"]["content"]
        assert endpoint.base64_field in v1_answers["application/json"]["schema"]["properties"]
    assert set(models["ImageToVideoRequest"]["properties"]["aspect_ratio"]["enum"]) == {
        "16:9",
        "9:16",
        "1:1",
    }
    voice = paths["/v1/kling-create-voice"]["post"]["requestBody"]
    assert voice["content"]["application/json"]["schema"]["$ref"].endswith("/CreateVoiceRequest")
    # Every ref resolves; the key is the security scheme of all but the signed downloads.
    refs = {ref.rsplit("/", 1)[1] for ref in _refs(doc)}
    assert refs <= models.keys(), refs - models.keys()
    assert doc["components"]["securitySchemes"]["ApiKey"]["name"] == "x-api-key"
    assert paths["/v1/files/{key}"]["get"]["security"] == []
    # A bad parameter is Kinema's 400 {"error"}, not FastAPI's 422 validation body.
    assert "HTTPValidationError" not in models


def _refs(node: object) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


DOMAIN = ("billing", "jobs", "store", "storage", "media", "engines", "runners", "voices")
"""Packages with the project's logic; ``api`` is the web edge, ``client`` the SDK (which reuses
the request models) and ``cli`` the command line."""


def _imports(path: Path) -> set[str]:
    import ast

    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_domain_packages_import_the_web_edge_only_from_their_routes() -> None:
    """Domain packages never import ``kinema.api``, FastAPI or Starlette, except in their
    ``routes.py`` files (the web edge, where each package's routes sit)."""
    src = ROOT / "src" / "kinema"
    offenders = []
    for package in DOMAIN:
        for path in sorted((src / package).rglob("*.py")):
            if path.name == "routes.py" or "migrations" in path.parts:
                continue
            web = {
                name
                for name in _imports(path)
                if name.split(".")[0] in ("fastapi", "starlette") or name.startswith("kinema.api")
            }
            if web:
                offenders.append(f"{path.relative_to(src)}: {sorted(web)}")
    assert not offenders, "web imports outside routes.py:\n" + "\n".join(offenders)


def test_the_runner_seam_is_typed_end_to_end() -> None:
    """No string-keyed dicts of Any cross the runner seam: the job spec, the run, its result and
    every worker message are typed models."""
    src = ROOT / "src" / "kinema"
    seam = [src / "jobs" / "spec.py", *(src / "runners").glob("*.py"), src / "jobs" / "handoff.py"]
    untyped = [
        f"{path.relative_to(src)}:{n}"
        for path in seam
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if "dict[str, Any]" in line and path.name != "spec.py"  # spec.py: the stored JSON
    ]
    assert not untyped, f"dict[str, Any] on the runner path: {untyped}"
