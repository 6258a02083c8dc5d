"""Downloads of stored outputs through signed, expiring URLs (public: the signature is the
credential, like an S3 presigned URL)."""

from __future__ import annotations

import mimetypes
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import FileResponse

from kinema.api.deps import Services, services
from kinema.api.schemas import ErrorResponse
from kinema.errors import Forbidden, NotFound
from kinema.storage.local import LocalStorage
from kinema.storage.signing import verify

router = APIRouter()


@router.get(
    "/v1/files/{key:path}",
    summary="Download an output (signed URL)",
    responses={code: {"model": ErrorResponse} for code in (400, 403, 404)},
)
async def download(
    key: str,
    svc: Annotated[Services, Depends(services)],
    expires: Annotated[int, Query()],
    signature: Annotated[str, Query(max_length=128)],
) -> FileResponse:
    if not verify(svc.secret, key, expires, signature):
        raise Forbidden("this download link is invalid or has expired")
    storage = svc.storage
    if not isinstance(storage, LocalStorage):
        raise NotFound(f"file {key!r} not found")
    path = storage.path(key)
    if not path.is_file():
        raise NotFound("this file has expired or does not exist")
    media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return FileResponse(path, media_type=media_type)
