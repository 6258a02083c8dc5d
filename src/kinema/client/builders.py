"""Typed request builders: the contract's parameters as keyword arguments, checked locally with
the server's own request models (``kinema.api.schemas``, pydantic only), so a request that would
be a 400 at submit fails here first, with the server's message.

Only what can be known without the server is checked: a voice id that does not exist for the key
or an image that does not decode is still the server's 400. Images may be anything
:func:`kinema.client.media.to_url` takes (URL, data URI, path, bytes, file, PIL image).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from kinema.api.schemas import CreateVoiceRequest, ImageToImageRequest, ImageToVideoRequest
from kinema.api.validation import format_validation_error
from kinema.client.errors import InvalidRequest
from kinema.client.media import MediaInput, to_url

__all__ = [
    "IMAGE_TO_IMAGE",
    "IMAGE_TO_VIDEO",
    "VOICE",
    "Element",
    "GenerationRequest",
    "Shot",
    "create_voice",
    "image_to_image",
    "image_to_video",
]

IMAGE_TO_VIDEO = "kling-3-standard-image2video"
IMAGE_TO_IMAGE = "kling-3-image2image"
VOICE = "kling-create-voice"


@dataclass(frozen=True)
class GenerationRequest:
    """A checked request: the model slug and the JSON parameters to send."""

    model: str
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Element:
    """A subject kept consistent across the output: ``@Element<n>`` in prompts is element *n*."""

    frontal: MediaInput
    references: Sequence[MediaInput] = ()


@dataclass(frozen=True)
class Shot:
    """One shot of a multi-shot video: its prompt and its length in seconds (≥ 1)."""

    prompt: str
    duration: int | str = 5


def _elements(elements: Sequence[Element]) -> list[dict[str, Any]]:
    return [
        {
            "frontal_image_url": to_url(e.frontal, f"elements[{i}].frontal_image_url"),
            "reference_image_urls": [
                to_url(r, f"elements[{i}].reference_image_urls[{j}]")
                for j, r in enumerate(e.references)
            ],
        }
        for i, e in enumerate(elements)
    ]


def _checked(model: type[BaseModel], slug: str, params: dict[str, Any]) -> GenerationRequest:
    """``params`` without the unset ones, validated by the server's model for ``slug``."""
    given = {k: v for k, v in params.items() if v is not None and v != []}
    try:
        model.model_validate(given)
    except ValidationError as exc:
        raise InvalidRequest(format_validation_error(exc)) from exc
    return GenerationRequest(slug, given)


def image_to_video(
    start_image: MediaInput,
    prompt: str | None = None,
    *,
    end_image: MediaInput | None = None,
    aspect_ratio: str | None = None,
    duration: int | str | None = None,
    cfg_scale: float | None = None,
    elements: Sequence[Element] = (),
    generate_audio: bool | None = None,
    multi_prompt: Sequence[Shot] = (),
    negative_prompt: str | None = None,
    shot_type: str | None = None,
    voice_ids: Sequence[str] = (),
    seed: int | None = None,
    webhook: str | None = None,
) -> GenerationRequest:
    """A ``kling-3-standard-image2video`` request; ``None`` leaves the server's default."""
    params = {
        "prompt": prompt,
        "start_image_url": to_url(start_image, "start_image_url"),
        "end_image_url": None if end_image is None else to_url(end_image, "end_image_url"),
        "aspect_ratio": aspect_ratio,
        "duration": duration,
        "cfg_scale": cfg_scale,
        "elements": _elements(elements),
        "generate_audio": generate_audio,
        "multi_prompt": [{"prompt": s.prompt, "duration": s.duration} for s in multi_prompt],
        "negative_prompt": negative_prompt,
        "shot_type": shot_type,
        "voice_ids": list(voice_ids),
        "seed": seed,
        "webhook": webhook,
    }
    return _checked(ImageToVideoRequest, IMAGE_TO_VIDEO, params)


def image_to_image(
    image: MediaInput,
    prompt: str,
    *,
    aspect_ratio: str | None = None,
    elements: Sequence[Element] = (),
    output_format: str | None = None,
    resolution: str | None = None,
    seed: int | None = None,
    webhook: str | None = None,
) -> GenerationRequest:
    """A ``kling-3-image2image`` request; ``None`` leaves the server's default."""
    params = {
        "image_url": to_url(image, "image_url"),
        "prompt": prompt,
        "aspect_ratio": aspect_ratio,
        "elements": _elements(elements),
        "output_format": output_format,
        "resolution": resolution,
        "seed": seed,
        "webhook": webhook,
    }
    return _checked(ImageToImageRequest, IMAGE_TO_IMAGE, params)


def create_voice(voice: MediaInput, name: str | None = None) -> GenerationRequest:
    """A ``kling-create-voice`` request: a 5-30 s sample (mp3, wav, mp4, mov) of one speaker."""
    params = {"voice_url": to_url(voice, "voice_url"), "voice_name": name}
    return _checked(CreateVoiceRequest, VOICE, params)
