"""The hosted endpoints as data: one :class:`Endpoint` per slug. Each knows its request model,
its engine task, its price, the media it must fetch at submit time and the engine parameters it
derives. Routes never branch on a slug."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from kinema.api.schemas import VIDEO_FPS, Element, ImageToImageRequest, ImageToVideoRequest
from kinema.billing.pricing import image_price, video_price
from kinema.engines.base import Task
from kinema.engines.geometry import grid_frame_count
from kinema.engines.plan import split_prompt
from kinema.engines.registry import Preset
from kinema.errors import InvalidRequest
from kinema.jobs.spec import ElementInputs, ImageSpec, JobSpec, ShotSpec, VideoSpec
from kinema.settings import BillingSettings
from kinema.voices.reference import reference_key
from kinema.voices.script import parse_script
from kinema.voices.timeline import check_fits


@dataclass(frozen=True)
class MediaRef:
    """One input image to fetch at submit time."""

    key: str
    """Where it is stored (the job spec names it by this key)."""
    field: str
    """The request field, for error messages (``elements[0].reference_image_urls[1]``)."""
    value: str
    """What the client sent: URL, data URI or base64."""


MediaRefs = list[MediaRef]


class _Keys:
    """Storage keys for one job's inputs, in request order, each paired with what to fetch."""

    def __init__(self, job_id: str) -> None:
        self._job_id = job_id
        self.refs: MediaRefs = []

    def add(self, name: str, field: str, value: str) -> str:
        key = f"inputs/{self._job_id}/{len(self.refs):02d}-{name}"
        self.refs.append(MediaRef(key, field, value))
        return key

    def elements(self, elements: list[Element] | None) -> tuple[ElementInputs, ...]:
        found = []
        for i, element in enumerate(elements or []):
            field = f"elements[{i}]"
            frontal = self.add(
                f"element{i + 1}_frontal", f"{field}.frontal_image_url", element.frontal_image_url
            )
            refs = tuple(
                self.add(f"element{i + 1}_references", f"{field}.reference_image_urls[{j}]", url)
                for j, url in enumerate(element.reference_image_urls)
            )
            found.append(ElementInputs(frontal=frontal, references=refs))
        return tuple(found)


@dataclass(frozen=True)
class Plan:
    """What a request becomes: the job spec, and the inputs to fetch for it."""

    spec: JobSpec
    media: MediaRefs


@dataclass(frozen=True)
class Endpoint:
    slug: str
    task: Task
    request_model: type[BaseModel]
    base64_field: str
    """The JSON field of a ``base64: true`` sync answer."""
    price: Callable[[Any, BillingSettings], int]
    """(job spec, billing settings) → the price in micro-credits: for what will be delivered."""
    plan: Callable[[Any, str, dict[Task, Preset]], Plan]
    """(request, job id, the configured preset per task) → the job spec and its inputs."""
    voice_ids: Callable[[Any], list[str]] = lambda _body: []
    """Voice ids the request uses; each must exist for the calling key (checked at submit)."""
    check: Callable[[Any, dict[Task, Preset]], None] = lambda _body, _presets: None
    """Submit-time rules that depend on the configured engine presets (400s, never late)."""


def _seed(given: int | None) -> int:
    """The client's seed, or one drawn now: stored in the spec, so a retry renders the same
    output and the reported seed reproduces it."""
    return secrets.randbelow(2**31) if given is None else given


# Image to video ---------------------------------------------------------------------------------


def _video_price(spec: VideoSpec, billing: BillingSettings) -> int:
    # A spec carries voices only when they will be honoured (else the submit was a 400), and a
    # run that fails to speak them fails and is refunded: the surcharge is paid for voices heard.
    voice = bool(spec.voice_references)
    return video_price(billing, duration_s=spec.duration_s, audio=spec.generate_audio, voice=voice)


def _video_plan(body: ImageToVideoRequest, job_id: str, presets: dict[Task, Preset]) -> Plan:
    preset = presets[Task.IMAGE_TO_VIDEO]
    width, height = body.output_size
    keys = _Keys(job_id)
    start = keys.add("start_image", "start_image_url", body.start_image_url)
    end = keys.add("end_image", "end_image_url", body.end_image_url) if body.end_image_url else None
    spec = VideoSpec(
        preset=preset.name,
        prompt=body.prompt or "",
        negative_prompt=body.negative_prompt,
        aspect_ratio=body.aspect_ratio,
        width=width,
        height=height,
        fps=VIDEO_FPS,
        duration_s=body.duration_s,
        num_frames=body.duration_s * VIDEO_FPS,
        cfg_scale=body.cfg_scale,
        # An engine without audio delivers (and is paid for) the video alone.
        generate_audio=body.generate_audio and preset.capabilities.audio,
        audio_requested=body.generate_audio,
        shot_type=body.shot_type,
        shots=_shots(body),
        seed=_seed(body.seed),
        start_image=start,
        end_image=end,
        elements=keys.elements(body.elements),
        voice_references=tuple(reference_key(v) for v in body.voice_ids or []),
    )
    return Plan(spec, keys.refs)


def _shots(body: ImageToVideoRequest) -> tuple[ShotSpec, ...]:
    """One generation per shot: ``multi_prompt`` (customize) as given, the request's ``prompt``,
    when also given, prefixed as context; ``intelligence`` splits the prompt by the rule in
    :mod:`kinema.engines.plan`; otherwise one shot."""
    context = (body.prompt or "").strip()
    if body.multi_prompt:
        return tuple(
            ShotSpec(
                prompt=f"{context} {s.prompt}".strip(),
                duration_s=s.duration_s,
                dialogue=s.prompt if body.voice_ids and context else None,
            )
            for s in body.multi_prompt
        )
    if body.shot_type == "intelligence":
        split = split_prompt(context, body.duration_s)
        return tuple(ShotSpec(prompt=p, duration_s=s) for p, s in split)
    return (ShotSpec(prompt=context, duration_s=body.duration_s),)


def _video_check(body: ImageToVideoRequest, presets: dict[Task, Preset]) -> None:
    video, image = presets[Task.IMAGE_TO_VIDEO], presets[Task.IMAGE_TO_IMAGE]
    if body.voice_ids:
        _check_voices(body, video)
    # Elements go to the video engine if it takes references, else they are composed into the
    # first frame by the image engine, which must take them all.
    _check_frames(body, video)
    taker = video if video.capabilities.max_references > 0 else image
    wanted = 1 + _reference_count(body.elements)
    if body.elements and wanted > taker.capabilities.max_references:
        raise InvalidRequest(
            f"elements: {wanted} images (start + element images) exceed the "
            f"{taker.capabilities.max_references} that {taker.name} takes"
        )


def _check_voices(body: ImageToVideoRequest, video: Preset) -> None:
    """``voice_ids`` need a video engine that follows a speech track, and each shot's lines
    must fit it (lengths estimated from the text: :mod:`kinema.voices.timeline`)."""
    if not video.capabilities.follows_audio:
        raise InvalidRequest(
            f"voice_ids: voices are not supported by the configured video engine "
            f"({video.name}); remove voice_ids (and <<<voice_n>>> references)"
        )
    voices = len(body.voice_ids)
    for index, shot in enumerate(_shots(body)):
        field = f"multi_prompt[{index}].prompt" if body.multi_prompt else "prompt"
        lines = parse_script(shot.script, voices, field=field)
        check_fits(lines, shot.duration_s, field=field)


def _check_frames(body: ImageToVideoRequest, video: Preset) -> None:
    """Each shot's frames must fit what the video engine renders in one generation."""
    shots = _shots(body)
    for shot in shots:
        frames = shot.duration_s * VIDEO_FPS
        if not _fits(frames, video):
            longest = max((s for s in range(1, 16) if _fits(s * VIDEO_FPS, video)), default=0)
            what = "duration" if len(shots) == 1 else "multi_prompt"
            raise InvalidRequest(
                f"{what}: a {shot.duration_s} s shot ({frames} frames at {VIDEO_FPS} fps) is "
                f"longer than the configured video engine ({video.name}) renders in one "
                f"generation (max_frames {video.capabilities.max_frames}: {longest} s at most)"
            )


def _fits(frames: int, video: Preset) -> bool:
    try:
        grid_frame_count(frames, video.capabilities)
    except ValueError:
        return False
    return True


def _reference_count(elements: list[Element] | None) -> int:
    return sum(1 + len(e.reference_image_urls) for e in elements or [])


# Image to image ---------------------------------------------------------------------------------


def _image_price(spec: ImageSpec, billing: BillingSettings) -> int:
    return image_price(billing, resolution=spec.resolution)


def _image_check(body: ImageToImageRequest, presets: dict[Task, Preset]) -> None:
    preset = presets[Task.IMAGE_TO_IMAGE]
    wanted = 1 + _reference_count(body.elements)
    if wanted > preset.capabilities.max_references:
        raise InvalidRequest(
            f"elements: {wanted} images (source + element images) exceed the "
            f"{preset.capabilities.max_references} the configured image engine ({preset.name}) "
            "takes"
        )


def _image_plan(body: ImageToImageRequest, job_id: str, presets: dict[Task, Preset]) -> Plan:
    preset = presets[Task.IMAGE_TO_IMAGE].name
    width, height = body.output_size
    keys = _Keys(job_id)
    image = keys.add("image", "image_url", body.image_url)
    spec = ImageSpec(
        preset=preset,
        prompt=body.prompt,
        aspect_ratio=body.aspect_ratio,
        resolution=body.resolution,
        width=width,
        height=height,
        output_format=body.output_format,
        seed=_seed(body.seed),
        image=image,
        elements=keys.elements(body.elements),
    )
    return Plan(spec, keys.refs)


ENDPOINTS: dict[str, Endpoint] = {
    e.slug: e
    for e in (
        Endpoint(
            slug="kling-3-standard-image2video",
            task=Task.IMAGE_TO_VIDEO,
            request_model=ImageToVideoRequest,
            base64_field="video",
            price=_video_price,
            plan=_video_plan,
            check=_video_check,
            voice_ids=lambda body: list(body.voice_ids or []),
        ),
        Endpoint(
            slug="kling-3-image2image",
            task=Task.IMAGE_TO_IMAGE,
            request_model=ImageToImageRequest,
            base64_field="image",
            price=_image_price,
            plan=_image_plan,
            check=_image_check,
        ),
    )
}
