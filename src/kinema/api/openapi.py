"""The OpenAPI document the app serves at ``/openapi.json`` (committed as docs/openapi.json; a
test diffs it; ``python -m kinema.api.openapi`` prints it).

FastAPI's own document, completed where it cannot see: the generation routes read their bodies
themselves (checks run in the contract's order, before the body is even read), and one route
serves every model slug. So each model gets its own documented endpoints, ``POST /v1/<slug>``
and ``POST /v2/<slug>``, with its request model as the body and, for v1, the media it answers;
voice creation gets its body; and the API key is declared as the security scheme every
operation but the signed downloads requires.
"""

from __future__ import annotations

import copy
import functools
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from kinema.api.endpoints import ENDPOINTS, Endpoint
from kinema.api.schemas import CreateVoiceRequest
from kinema.engines.base import Task
from kinema.settings import Settings

SCHEMES = {
    "ApiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
    "Bearer": {"type": "http", "scheme": "bearer", "description": "the same key"},
}
PUBLIC = {"/v1/files/{key}"}
"""Documented paths that take no key (the signature in the URL is the credential)."""
MEDIA = {
    Task.IMAGE_TO_VIDEO: ["video/mp4"],
    Task.IMAGE_TO_IMAGE: ["image/png", "image/jpeg", "image/webp"],
}


def install(app: FastAPI) -> None:
    """Serve :func:`document` as the app's OpenAPI document."""
    app.openapi = functools.partial(document, app)  # type: ignore[method-assign]


def document(app: FastAPI) -> dict[str, Any]:
    """The app's OpenAPI document, built once."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        _complete(schema)
        app.openapi_schema = schema
    return app.openapi_schema


def _complete(schema: dict[str, Any]) -> None:
    paths: dict[str, Any] = schema["paths"]
    components = schema.setdefault("components", {})
    models: dict[str, Any] = components.setdefault("schemas", {})
    for version in ("v1", "v2"):
        template = paths.pop(f"/{version}/{{slug}}")["post"]
        for endpoint in ENDPOINTS.values():
            operation = _model_operation(template, endpoint, version)
            operation["requestBody"] = _body(models, endpoint.request_model)
            paths[f"/{version}/{endpoint.slug}"] = {"post": operation}
    voice = paths["/v1/kling-create-voice"]["post"]
    voice["requestBody"] = _body(models, CreateVoiceRequest)
    _no_framework_422(paths, models)
    components["securitySchemes"] = SCHEMES
    schema["security"] = [{name: []} for name in SCHEMES]
    for path in PUBLIC:
        for operation in paths[path].values():
            operation["security"] = []


def _no_framework_422(paths: dict[str, Any], models: dict[str, Any]) -> None:
    """FastAPI documents a 422 ``HTTPValidationError`` for every route with parameters; Kinema
    answers a bad parameter with a 400 ``{"error"}`` (api/errors.py). (The 422 of a FAILED
    request, an ``ErrorResponse``, stays.)"""
    framework = {"$ref": "#/components/schemas/HTTPValidationError"}
    for operations in paths.values():
        for operation in operations.values():
            responses = operation["responses"]
            content = responses.get("422", {}).get("content", {})
            if content.get("application/json", {}).get("schema") == framework:
                del responses["422"]
                responses.setdefault("400", _error("Bad Request"))
    for name in ("HTTPValidationError", "ValidationError"):
        models.pop(name, None)


def _error(description: str) -> dict[str, Any]:
    ref = {"$ref": "#/components/schemas/ErrorResponse"}
    return {"description": description, "content": {"application/json": {"schema": ref}}}


def _model_operation(template: dict[str, Any], endpoint: Endpoint, version: str) -> Any:
    operation = copy.deepcopy(template)
    parameters = [p for p in operation.pop("parameters", []) if p["name"] != "slug"]
    if parameters:
        operation["parameters"] = parameters
    operation["operationId"] = f"{version}_{endpoint.slug.replace('-', '_')}"
    operation["summary"] = f"{endpoint.slug}: {template['summary']}"
    if version == "v2":  # no worker runs during a submit: 502 and 504 are the sync path's
        for code in ("502", "504"):
            operation["responses"].pop(code, None)
    if version == "v1":
        binary = {"schema": {"type": "string", "format": "binary"}}
        answer: dict[str, Any] = dict.fromkeys(MEDIA[endpoint.task], binary)
        field = endpoint.base64_field
        answer["application/json"] = {
            "schema": {
                "type": "object",
                "properties": {field: {"type": "string", "contentEncoding": "base64"}},
                "required": [field],
                "description": 'the media as base64, when the request says "base64": true',
            }
        }
        operation["responses"]["200"]["content"] = answer
    return operation


def _body(models: dict[str, Any], model: type[BaseModel]) -> dict[str, Any]:
    """A required JSON body of ``model``, its schema (and its parts') added to ``models``."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    models.update(schema.pop("$defs", {}))
    models[model.__name__] = schema
    ref = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"required": True, "content": {"application/json": {"schema": ref}}}


def render() -> str:
    with tempfile.TemporaryDirectory() as tmp:
        from kinema.api.app import create_app  # imports this module

        app = create_app(Settings(data_dir=Path(tmp)))
        return json.dumps(app.openapi(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
