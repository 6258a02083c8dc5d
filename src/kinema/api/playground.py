"""The web playground: ``/playground``, one page (HTML, a small script and a stylesheet from
``api/static/``) that submits through v2 with a key kept in the browser, and ``GET /`` redirecting
to it. Public: the page never sees a key server-side; every call it makes carries the user's own.
Its Content-Security-Policy lets it load nothing but this server's files (no CDN, no fonts)."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, RedirectResponse

from kinema.errors import NotFound

router = APIRouter()

PAGE = "/playground"
ASSETS_URL = PAGE + "/assets"
ASSETS = {"playground.js": "text/javascript", "playground.css": "text/css"}
"""The files the page loads, by name (nothing else under the package is served)."""
# Outputs may be served from elsewhere (S3 presigned URLs), hence any source for media.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src * data: blob:; media-src * data: blob:; form-action 'none'; base-uri 'none'"
)
# no-cache, not no-store: the browser revalidates, so an upgraded server's page is picked up.
CACHE = "no-cache"


def _static() -> Path:
    return Path(str(importlib.resources.files("kinema.api") / "static"))


@router.get("/", include_in_schema=False)
async def root(request: Request) -> RedirectResponse:
    prefix: str = request.scope.get("root_path", "")
    return RedirectResponse(prefix.rstrip("/") + PAGE, status_code=307)


@router.get(PAGE, include_in_schema=False)
async def page() -> FileResponse:
    return FileResponse(
        _static() / "playground.html",
        media_type="text/html",
        headers={"content-security-policy": CSP, "cache-control": CACHE},
    )


@router.get(ASSETS_URL + "/{name}", include_in_schema=False)
async def asset(name: str) -> FileResponse:
    media_type = ASSETS.get(name)
    if media_type is None:
        raise NotFound(f"no playground asset {name!r}")
    return FileResponse(_static() / name, media_type=media_type, headers={"cache-control": CACHE})
