"""Kinema's Python SDK: ``Client`` / ``AsyncClient`` for the hosted contract and its extensions.

Imports httpx and pydantic only (never torch, diffusers or the server), so it installs and runs
anywhere. Five lines::

    from kinema.client import Client, image_to_video

    client = Client()  # KINEMA_URL (default http://127.0.0.1:8000) and KINEMA_KEY
    result = client.run(image_to_video("cat.png", "the cat turns its head", duration=3))
    result.save("cat.mp4")

The names follow the hosted API's own SDK: ``run_sync`` (v1, bytes), ``run`` (v2 submit and
wait), ``submit`` (a :class:`Job`). User guide: docs/client.md.
"""

from kinema.client._core import Event, Progress, RetryPolicy
from kinema.client.aio import AsyncClient, AsyncJob
from kinema.client.builders import (
    IMAGE_TO_IMAGE,
    IMAGE_TO_VIDEO,
    VOICE,
    Element,
    GenerationRequest,
    Shot,
    create_voice,
    image_to_image,
    image_to_video,
)
from kinema.client.errors import (
    APIError,
    Conflict,
    ConnectionFailed,
    Forbidden,
    GenerationFailed,
    GenerationTimeout,
    InsufficientCredits,
    InvalidRequest,
    KinemaClientError,
    NotFound,
    RateLimited,
    ServerError,
    Unauthorized,
    WebhookVerificationError,
)
from kinema.client.results import AsyncOutput, AsyncResult, Output, Result
from kinema.client.sync import Client, Job

__all__ = [
    "IMAGE_TO_IMAGE",
    "IMAGE_TO_VIDEO",
    "VOICE",
    "APIError",
    "AsyncClient",
    "AsyncJob",
    "AsyncOutput",
    "AsyncResult",
    "Client",
    "Conflict",
    "ConnectionFailed",
    "Element",
    "Event",
    "Forbidden",
    "GenerationFailed",
    "GenerationRequest",
    "GenerationTimeout",
    "InsufficientCredits",
    "InvalidRequest",
    "Job",
    "KinemaClientError",
    "NotFound",
    "Output",
    "Progress",
    "RateLimited",
    "Result",
    "RetryPolicy",
    "ServerError",
    "Shot",
    "Unauthorized",
    "WebhookVerificationError",
    "create_voice",
    "image_to_image",
    "image_to_video",
]
