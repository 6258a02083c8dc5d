"""``POST /v1/kling-create-voice``: store a voice sample for ``voice_ids``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from kinema.api.deps import Services, api_key, read_body, services
from kinema.api.schemas import CreateVoiceRequest, ErrorResponse, VoiceResponse
from kinema.api.service import VOICE_SLUG
from kinema.api.validation import parse_body

router = APIRouter()


@router.post(
    f"/v1/{VOICE_SLUG}",
    response_model=VoiceResponse,
    responses={code: {"model": ErrorResponse} for code in (400, 401, 403, 406, 413, 429)},
    summary="Create a voice from a 5-30 s sample (mp3, wav, mp4, mov) for voice_ids",
)
async def create_voice(
    request: Request, svc: Annotated[Services, Depends(services)]
) -> VoiceResponse:
    key, _ = await svc.generation.admit(
        VOICE_SLUG, content_type=request.headers.get("content-type"), api_key=api_key(request)
    )
    body = parse_body(CreateVoiceRequest, await read_body(request, svc.settings.server.max_body_mb))
    sample = await svc.generation.fetch(body.voice_url, field="voice_url")
    voice = await svc.voices.create(key.id, sample, body.voice_name)
    return VoiceResponse(voice_id=voice.id)
