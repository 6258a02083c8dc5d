"""The balance of the calling key."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from kinema.api.deps import Services, api_key, services
from kinema.api.schemas import CreditsResponse, ErrorResponse
from kinema.billing.keys import from_micros

router = APIRouter()


@router.get(
    "/v1/get-user-credits",
    response_model=CreditsResponse,
    responses={401: {"model": ErrorResponse}},
    summary="Credits left on the calling key",
)
async def get_user_credits(
    request: Request, svc: Annotated[Services, Depends(services)]
) -> CreditsResponse:
    key = await svc.keys.authenticate(api_key(request))
    return CreditsResponse(credits=from_micros(await svc.keys.balance(key.id)))
