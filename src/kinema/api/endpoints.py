"""The hosted endpoints as data: one :class:`Endpoint` per slug. Each knows its request model,
its engine task, its price, the media it must fetch at submit time and the engine parameters it
derives. Routes never branch on a slug."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from kinema.api.schemas import VIDEO_FPS, Element, ImageToImageRequest, ImageToVideoRequest
from kinema.billing.pricing import image_price, video_price
from kinema.engines.base import Task
from kinema.engines.registry import Preset
from kinema.errors import InvalidRequest
from kinema.settings import BillingSettings


@dataclass(frozen=True)
class MediaRef:
    """One input image to fetch at submit time."""

    name: str
    """The input name the engine sees (``start_image``, ``element1_references``)."""
    field: str
    """The request field, for error messages (``elements[0].reference_image_urls[1]``)."""
    value: str
    """What the client sent: URL, data URI or base64."""
    many: bool = False
    """Collected into a list under ``name``."""


MediaRefs = list[MediaRef]


@dataclass(frozen=True)
class Endpoint:
    slug: str
    task: Task
    request_model: type[BaseModel]
    base64_field: str
    """The JSON field of a ``base64: true`` sync answer."""
    price: Callable[[Any, BillingSettings], int]
    media: Callable[[Any], MediaRefs]
    params: Callable[[Any], dict[str, Any]]
    voice_ids: Callable[[Any], list[str]] = lambda _body: []
    """Voice ids the request uses; each must exist for the calling key (checked at submit)."""
    check: Callable[[Any, dict[Task, Preset]], None] = lambda _body, _presets: None
    """Submit-time rules that depend on the configured engine presets (400s, never late)."""


def _element_refs(elements: list[Element] | None) -> MediaRefs:
    refs: MediaRefs = []
    for i, element in enumerate(elements or []):
        field = f"elements[{i}]"
        refs.append(
            MediaRef(
                f"element{i + 1}_frontal", f"{field}.frontal_image_url", element.frontal_image_url
            )
        )
        refs.extend(
            MediaRef(
                f"element{i + 1}_references", f"{field}.reference_image_urls[{j}]", url, many=True
            )
            for j, url in enumerate(element.reference_image_urls)
        )
    return refs


# Image to video ---------------------------------------------------------------------------------


def _video_price(body: ImageToVideoRequest, billing: BillingSettings) -> int:
    return video_price(
        billing, duration_s=body.duration_s, audio=body.generate_audio, voice=bool(body.voice_ids)
    )


def _video_media(body: ImageToVideoRequest) -> MediaRefs:
    refs = [MediaRef("start_image", "start_image_url", body.start_image_url)]
    if body.end_image_url:
        refs.append(MediaRef("end_image", "end_image_url", body.end_image_url))
    return refs + _element_refs(body.elements)


def _video_params(body: ImageToVideoRequest) -> dict[str, Any]:
    width, height = body.output_size
    return {
        "prompt": body.prompt or "",
        "negative_prompt": body.negative_prompt,
        "aspect_ratio": body.aspect_ratio,
        "width": width,
        "height": height,
        "fps": VIDEO_FPS,
        "duration_s": body.duration_s,
        "num_frames": body.duration_s * VIDEO_FPS,
        "cfg_scale": body.cfg_scale,
        "generate_audio": body.generate_audio,
        "shot_type": body.shot_type,
        "shots": [
            s.model_dump(mode="json") | {"duration_s": s.duration_s}
            for s in body.multi_prompt or []
        ],
        "elements": len(body.elements or []),
        "seed": body.seed,
    }


def _video_check(body: ImageToVideoRequest, presets: dict[Task, Preset]) -> None:
    video, image = presets[Task.IMAGE_TO_VIDEO], presets[Task.IMAGE_TO_IMAGE]
    if body.voice_ids:
        raise InvalidRequest(
            f"voice_ids: voices are not supported by the configured video engine "
            f"({video.name}); remove voice_ids (and <<<voice_n>>> references)"
        )
    # Elements go to the video engine if it takes references, else they are composed into the
    # first frame by the image engine, which must take them all.
    taker = video if video.capabilities.max_references > 0 else image
    wanted = 1 + _reference_count(body.elements)
    if body.elements and wanted > taker.capabilities.max_references:
        raise InvalidRequest(
            f"elements: {wanted} images (start + element images) exceed the "
            f"{taker.capabilities.max_references} that {taker.name} takes"
        )


def _reference_count(elements: list[Element] | None) -> int:
    return sum(1 + len(e.reference_image_urls) for e in elements or [])


# Image to image ---------------------------------------------------------------------------------


def _image_price(body: ImageToImageRequest, billing: BillingSettings) -> int:
    return image_price(billing, resolution=body.resolution)


def _image_check(body: ImageToImageRequest, presets: dict[Task, Preset]) -> None:
    preset = presets[Task.IMAGE_TO_IMAGE]
    wanted = 1 + _reference_count(body.elements)
    if wanted > preset.capabilities.max_references:
        raise InvalidRequest(
            f"elements: {wanted} images (source + element images) exceed the "
            f"{preset.capabilities.max_references} the configured image engine ({preset.name}) "
            "takes"
        )


def _image_media(body: ImageToImageRequest) -> MediaRefs:
    return [MediaRef("image", "image_url", body.image_url), *_element_refs(body.elements)]


def _image_params(body: ImageToImageRequest) -> dict[str, Any]:
    width, height = body.output_size
    return {
        "prompt": body.prompt,
        "aspect_ratio": body.aspect_ratio,
        "resolution": body.resolution,
        "width": width,
        "height": height,
        "output_format": body.output_format,
        "elements": len(body.elements or []),
        "seed": body.seed,
    }


ENDPOINTS: dict[str, Endpoint] = {
    e.slug: e
    for e in (
        Endpoint(
            slug="kling-3-standard-image2video",
            task=Task.IMAGE_TO_VIDEO,
            request_model=ImageToVideoRequest,
            base64_field="video",
            price=_video_price,
            media=_video_media,
            params=_video_params,
            check=_video_check,
            voice_ids=lambda body: list(body.voice_ids or []),
        ),
        Endpoint(
            slug="kling-3-image2image",
            task=Task.IMAGE_TO_IMAGE,
            request_model=ImageToImageRequest,
            base64_field="image",
            price=_image_price,
            media=_image_media,
            params=_image_params,
            check=_image_check,
        ),
    )
}
