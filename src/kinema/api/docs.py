"""``/docs`` (Swagger UI) and ``/redoc`` (ReDoc), served with their scripts, stylesheet and icon
from this server: the pages work on a machine with no internet (FastAPI's own load them from a
CDN). The assets come from the ``fastapi-offline`` package (MIT; Swagger UI is Apache-2.0,
ReDoc MIT), which ships exactly these files; only its files are used, not its app."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import FileResponse, HTMLResponse

from kinema.errors import NotFound

router = APIRouter()

ASSETS_URL = "/docs/assets"
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "redoc.standalone.js": "text/javascript",
    "favicon.png": "image/png",
}
"""The files the two pages load, by name (nothing else under the package is served)."""
CACHE = "public, max-age=86400"
SWAGGER_PARAMETERS = {"validatorUrl": None}
"""Swagger UI's defaults, less its online validator badge (a request to validator.swagger.io)."""
OAUTH2_REDIRECT = "/docs/oauth2-redirect"


def _assets_dir() -> Path:
    return Path(str(importlib.resources.files("fastapi_offline") / "static"))


def _root(request: Request) -> str:
    root: str = request.scope.get("root_path", "")
    return root.rstrip("/")


@router.get("/docs", include_in_schema=False)
async def swagger_ui(request: Request) -> HTMLResponse:
    root = _root(request)
    return get_swagger_ui_html(
        openapi_url=f"{root}{request.app.openapi_url}",
        title=f"{request.app.title} - Swagger UI",
        swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
        swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
        oauth2_redirect_url=f"{root}{OAUTH2_REDIRECT}",
        swagger_ui_parameters=SWAGGER_PARAMETERS,
    )


@router.get(OAUTH2_REDIRECT, include_in_schema=False)
async def swagger_ui_redirect() -> HTMLResponse:
    return get_swagger_ui_oauth2_redirect_html()


@router.get("/redoc", include_in_schema=False)
async def redoc(request: Request) -> HTMLResponse:
    root = _root(request)
    return get_redoc_html(
        openapi_url=f"{root}{request.app.openapi_url}",
        title=f"{request.app.title} - ReDoc",
        redoc_js_url=f"{root}{ASSETS_URL}/redoc.standalone.js",
        redoc_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
        with_google_fonts=False,  # fonts from Google's servers: the page falls back to the system's
    )


@router.get(ASSETS_URL + "/{name}", include_in_schema=False)
async def asset(name: str) -> FileResponse:
    media_type = ASSETS.get(name)
    if media_type is None:
        raise NotFound(f"no documentation asset {name!r}")
    return FileResponse(
        _assets_dir() / name, media_type=media_type, headers={"cache-control": CACHE}
    )
