"""One place that renders every error as ``{"error": message}`` with its status."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from kinema.api.validation import format_location
from kinema.errors import KinemaError, RateLimited

log = logging.getLogger(__name__)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def _kinema_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, KinemaError)
    headers = dict(exc.headers)
    if isinstance(exc, RateLimited):
        headers["Retry-After"] = str(exc.retry_after)
    return _error(exc.status_code, exc.message, headers)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    messages = {
        404: f"endpoint {request.url.path} not found",
        405: f"method {request.method} not allowed on {request.url.path}",
    }
    message = messages.get(exc.status_code, str(exc.detail))
    return _error(exc.status_code, message, dict(exc.headers or {}))


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0]
    return _error(400, f"{format_location(first['loc'][1:] or first['loc'])}: {first['msg']}")


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return _error(500, "internal error")


def install(app: FastAPI) -> None:
    app.add_exception_handler(KinemaError, _kinema_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)
