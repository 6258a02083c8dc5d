"""Request and response models: the hosted contract (``/work/shared/CONTRACT.md``) as pydantic.

Every request model ignores unknown fields, as the hosted API does, and treats an explicit JSON
``null`` exactly like an omitted field (the default applies). Nothing is stripped or rewritten
silently; the few normalisations are listed here and on the fields they touch:

- ``duration`` (and a shot's ``duration``) accepts ``"5"``, ``"05"``, ``5`` and ``5.0`` and is
  stored as the canonical string ``"5"``; ``duration_s`` gives the integer.
- ``ImageToVideoRequest.prompt`` that is empty or only whitespace counts as missing and is stored
  as ``None``.
- ``elements``, ``voice_ids`` and ``reference_image_urls`` are ``[]`` when omitted; an empty
  ``multi_prompt`` list counts as missing and is stored as ``None``.

Booleans are strict (``true``/``false`` only), and numbers refuse booleans (``cfg_scale: true`` is
a 400, not ``1.0``).

Output sizes (width × height). Video is 1080p, see :data:`VIDEO_SIZES`. Images follow the
contract's "1K: long side ≈ 1024, 2K: long side ≈ 2048": the long side is exactly 1024 or 2048,
the short side is the multiple of 16 nearest to the exact aspect ratio:

    ======  ===========  ===========
    aspect  1K           2K
    ======  ===========  ===========
    16:9    1024 × 576   2048 × 1152
    9:16    576 × 1024   1152 × 2048
    1:1     1024 × 1024  2048 × 2048
    4:3     1024 × 768   2048 × 1536
    3:4     768 × 1024   1536 × 2048
    3:2     1024 × 688   2048 × 1360
    2:3     688 × 1024   1360 × 2048
    ======  ===========  ===========
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    WithJsonSchema,
    field_validator,
    model_validator,
)

__all__ = [
    "DEFAULT_NEGATIVE_PROMPT",
    "IMAGE_SIZES",
    "MAX_ELEMENTS",
    "MAX_PROMPT_CHARS",
    "MAX_REFERENCE_IMAGES",
    "MAX_SEED",
    "MAX_SHOTS",
    "MAX_SHOT_PROMPT_CHARS",
    "MAX_VOICES",
    "MAX_VOICE_NAME_CHARS",
    "VIDEO_FPS",
    "VIDEO_SIZES",
    "CreateVoiceRequest",
    "CreditsResponse",
    "Element",
    "ErrorResponse",
    "ImageAspectRatio",
    "ImageOutputFormat",
    "ImageResolution",
    "ImageToImageRequest",
    "ImageToVideoRequest",
    "Shot",
    "ShotDuration",
    "ShotType",
    "VideoAspectRatio",
    "VideoDuration",
    "VoiceResponse",
]

# --------------------------------------------------------------------------------------------
# Enumerations and limits
# --------------------------------------------------------------------------------------------

VideoAspectRatio = Literal["16:9", "9:16", "1:1"]
ImageAspectRatio = Literal["16:9", "9:16", "1:1", "4:3", "3:4", "3:2", "2:3"]
ImageResolution = Literal["1K", "2K"]
ImageOutputFormat = Literal["png", "jpeg", "webp"]
ShotType = Literal["customize", "intelligence"]
VideoDuration = Literal["3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15"]
ShotDuration = Literal[
    "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15"
]  # fmt: skip

MAX_PROMPT_CHARS: Final = 2500
"""Longest ``prompt``/``negative_prompt`` accepted (the Kling prompt limit)."""
MAX_SHOT_PROMPT_CHARS: Final = 512
MAX_ELEMENTS: Final = 3
MAX_REFERENCE_IMAGES: Final = 3
MAX_SHOTS: Final = 5
MAX_VOICES: Final = 2
MAX_VOICE_NAME_CHARS: Final = 20
MAX_SEED: Final = 2**32 - 1
"""Seeds are 0 .. 2**32-1 so every engine's generator (numpy included) can take them."""
DEFAULT_NEGATIVE_PROMPT: Final = "blur, distort, and low quality"

VIDEO_FPS: Final = 24
VIDEO_SIZES: Final[dict[VideoAspectRatio, tuple[int, int]]] = {
    "16:9": (1920, 1080),
    "9:16": (1080, 1920),
    "1:1": (1080, 1080),
}
IMAGE_SIZES: Final[dict[tuple[ImageAspectRatio, ImageResolution], tuple[int, int]]] = {
    ("16:9", "1K"): (1024, 576),
    ("16:9", "2K"): (2048, 1152),
    ("9:16", "1K"): (576, 1024),
    ("9:16", "2K"): (1152, 2048),
    ("1:1", "1K"): (1024, 1024),
    ("1:1", "2K"): (2048, 2048),
    ("4:3", "1K"): (1024, 768),
    ("4:3", "2K"): (2048, 1536),
    ("3:4", "1K"): (768, 1024),
    ("3:4", "2K"): (1536, 2048),
    ("3:2", "1K"): (1024, 688),
    ("3:2", "2K"): (2048, 1360),
    ("2:3", "1K"): (688, 1024),
    ("2:3", "2K"): (1360, 2048),
}

_ELEMENT_REF = re.compile(r"@Element(\d+)")
_VOICE_REF = re.compile(r"<<<voice_(\d+)>>>")
# A digit string this short always fits an int; longer ones are out of range anyway and would
# otherwise hit Python's int-from-str digit limit.
_SECONDS_STR = re.compile(r"[0-9]{1,6}")

# --------------------------------------------------------------------------------------------
# Reusable field types
# --------------------------------------------------------------------------------------------


def _describe(value: object) -> str:
    """Render a rejected input for an error message, JSON-style and short."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _seconds(value: object) -> int | None:
    """The whole number of seconds in ``value``, or None when it is not one.

    JSON has one number type, so ``5.0`` is accepted like ``5``; booleans are not numbers here.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _SECONDS_STR.fullmatch(value):
        return int(value)
    return None


def _parse_video_duration(value: object) -> object:
    n = _seconds(value)
    if n is None or not 3 <= n <= 15:
        raise ValueError(f'must be one of "3".."15" (got {_describe(value)})')
    return str(n)


def _parse_shot_duration(value: object) -> object:
    n = _seconds(value)
    if n is not None and n < 1:
        raise ValueError(f"each shot must last at least 1 second (got {_describe(value)})")
    if n is None or n > 15:
        raise ValueError(f'must be one of "1".."15" (got {_describe(value)})')
    return str(n)


def _number_not_bool(value: object) -> object:
    # pydantic's lax mode reads true as 1; for a number field that is always a client mistake.
    if isinstance(value, bool):
        raise ValueError(f"must be a number (got {_describe(value)})")
    return value


def _integer_not_bool(value: object) -> object:
    if isinstance(value, bool):
        raise ValueError(f"must be an integer (got {_describe(value)})")
    return value


def _duration_schema(low: int, high: int, note: str) -> dict[str, Any]:
    return {
        "anyOf": [
            {"type": "string", "enum": [str(n) for n in range(low, high + 1)]},
            {"type": "integer", "minimum": low, "maximum": high},
        ],
        "description": f"Seconds, {low}..{high}, as a string or an integer. {note}",
    }


DurationField = Annotated[
    VideoDuration,
    BeforeValidator(_parse_video_duration),
    WithJsonSchema(_duration_schema(3, 15, "Stored as the string form.")),
]
ShotDurationField = Annotated[
    ShotDuration,
    BeforeValidator(_parse_shot_duration),
    WithJsonSchema(_duration_schema(1, 15, "Each shot lasts at least 1 s.")),
]
UrlField = Annotated[
    str,
    Field(
        min_length=1,
        description="An http(s) URL, a data: URI or bare base64; fetched and checked later.",
    ),
]
SeedField = Annotated[
    int | None,
    BeforeValidator(_integer_not_bool),
    Field(
        ge=0,
        le=MAX_SEED,
        description=(
            "Extension (not in the hosted API): fixes the random seed, 0..2**32-1, for "
            "reproducible output on the same engine and hardware. Omitted: a random seed."
        ),
    ),
]
MAX_WEBHOOK_URL = 2048


def _webhook_url(value: str | None) -> str | None:
    if value is None:
        return None
    scheme, sep, rest = value.partition("://")
    if not sep or scheme.lower() not in ("http", "https") or not rest.split("/", 1)[0]:
        raise ValueError("must be an http(s) URL")
    return value


WebhookField = Annotated[
    str | None,
    AfterValidator(_webhook_url),
    Field(
        max_length=MAX_WEBHOOK_URL,
        description=(
            "Extension (not in the hosted API): an http(s) URL that gets a signed POST "
            "(Standard Webhooks) when the request ends, COMPLETED or FAILED."
        ),
    ),
]
Base64Field = Annotated[
    StrictBool,
    Field(
        description=(
            "Sync path only: answer JSON with the media as base64 instead of raw bytes "
            "(for video this is an extension). Ignored on the async path."
        )
    ),
]

# --------------------------------------------------------------------------------------------
# Request models
# --------------------------------------------------------------------------------------------


class _RequestModel(BaseModel):
    """Base of every request model: unknown fields ignored, ``null`` means "not given"."""

    model_config = ConfigDict(extra="ignore")

    @model_validator(mode="before")
    @classmethod
    def _null_is_omitted(cls, data: Any) -> Any:
        # Hosted clients send ``"end_image_url": null`` for "not set"; dropping those keys lets
        # the declared default apply instead of failing a non-nullable type.
        if isinstance(data, dict):
            return {key: value for key, value in data.items() if value is not None}
        return data


class Element(_RequestModel):
    """A character or object to keep consistent; element *n* is ``@Element<n>`` in prompts.

    Unknown fields are ignored and ``null`` counts as omitted, as in every request model.
    """

    frontal_image_url: UrlField
    reference_image_urls: list[UrlField] = Field(
        default_factory=list,
        max_length=MAX_REFERENCE_IMAGES,
        description="Up to 3 more views of the same subject.",
    )


class Shot(_RequestModel):
    """One shot of a multi-shot video: its prompt and its length.

    ``duration`` parses like the video's ``duration`` but spans 1..15 s (each shot lasts at least
    1 s) and defaults to ``"5"`` as the hosted API's does. Unknown fields are ignored.
    """

    prompt: str = Field(max_length=MAX_SHOT_PROMPT_CHARS)
    duration: ShotDurationField = "5"

    @field_validator("prompt")
    @classmethod
    def _prompt_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value

    @property
    def duration_s(self) -> int:
        """The shot length in whole seconds."""
        return int(self.duration)


class ImageToVideoRequest(_RequestModel):
    """Body of ``kling-3-standard-image2video`` (sync and async).

    Unknown fields are ignored, as the hosted API does; ``null`` counts as omitted.

    Cross-field rules, all checked here so a bad request is a 400 at submit, never a late
    failure (each error message starts with the field it is about):

    - ``prompt`` or ``multi_prompt`` is required; an empty or whitespace-only ``prompt`` counts as
      missing. Both may be given: ``multi_prompt`` then defines the shots and ``prompt`` is kept
      as overall context (its references are checked too).
    - ``shot_type "customize"`` (default) takes its shots from ``multi_prompt``, or makes one shot
      from ``prompt`` when there is none. ``shot_type "intelligence"`` splits ``prompt`` into
      shots automatically, so ``multi_prompt`` must not be given with it (and ``prompt`` is then
      required by the first rule).
    - ``end_image_url`` cannot be combined with ``multi_prompt``.
    - Shot durations must add up to ``duration`` exactly; each shot lasts at least 1 s.
    - Every ``@Element<n>`` in ``prompt`` or a shot prompt needs ``1 <= n <= len(elements)``.
      ``negative_prompt`` is not scanned: it names things to avoid, not elements to place.
    - Every ``<<<voice_<n>>>>`` in ``prompt`` or a shot prompt needs ``1 <= n <= len(voice_ids)``.
    - ``voice_ids`` requires ``generate_audio`` to be true.
    """

    prompt: str | None = Field(
        default=None,
        max_length=MAX_PROMPT_CHARS,
        description="Motion description; may reference @Element1..3, <<<voice_1>>>, <<<voice_2>>>.",
    )
    start_image_url: UrlField
    end_image_url: UrlField | None = None
    aspect_ratio: VideoAspectRatio = "16:9"
    cfg_scale: Annotated[float, BeforeValidator(_number_not_bool)] = Field(
        default=0.5, ge=0, le=1, allow_inf_nan=False, description="Prompt adherence, 0..1."
    )
    duration: DurationField = "5"
    elements: list[Element] = Field(default_factory=list, max_length=MAX_ELEMENTS)
    generate_audio: StrictBool = True
    multi_prompt: list[Shot] | None = Field(default=None, max_length=MAX_SHOTS)
    negative_prompt: str = Field(default=DEFAULT_NEGATIVE_PROMPT, max_length=MAX_PROMPT_CHARS)
    shot_type: ShotType = "customize"
    voice_ids: list[Annotated[str, Field(min_length=1)]] = Field(
        default_factory=list, max_length=MAX_VOICES
    )
    base64: Base64Field = False
    seed: SeedField = None
    webhook: WebhookField = None

    @field_validator("prompt")
    @classmethod
    def _blank_prompt_is_missing(cls, value: str | None) -> str | None:
        return value if value is not None and value.strip() else None

    @field_validator("multi_prompt")
    @classmethod
    def _empty_shots_are_missing(cls, value: list[Shot] | None) -> list[Shot] | None:
        return value or None

    @model_validator(mode="after")
    def _check_cross_field_rules(self) -> ImageToVideoRequest:
        self._check_prompt_modes()
        self._check_shot_durations()
        texts = self._prompt_texts()
        _check_refs(texts, _ELEMENT_REF, "@Element{}", "elements", len(self.elements))
        _check_refs(texts, _VOICE_REF, "<<<voice_{}>>>", "voice_ids", len(self.voice_ids))
        if self.voice_ids and not self.generate_audio:
            raise ValueError("voice_ids: requires generate_audio to be true")
        return self

    def _check_prompt_modes(self) -> None:
        if self.prompt is None and self.multi_prompt is None:
            raise ValueError(
                "prompt: required unless multi_prompt is given "
                "(an empty or whitespace-only prompt counts as missing)"
            )
        if self.multi_prompt is None:
            return
        if self.shot_type == "intelligence":
            raise ValueError(
                'multi_prompt: cannot be used with shot_type "intelligence", which splits '
                'prompt into shots itself; use shot_type "customize" or drop multi_prompt'
            )
        if self.end_image_url is not None:
            raise ValueError("end_image_url: cannot be combined with multi_prompt")

    def _check_shot_durations(self) -> None:
        if self.multi_prompt is None:
            return
        total = sum(shot.duration_s for shot in self.multi_prompt)
        if total != self.duration_s:
            raise ValueError(
                f"multi_prompt: shot durations add up to {total} s but duration is "
                f'"{self.duration}"; they must be equal'
            )

    def _prompt_texts(self) -> list[tuple[str, str]]:
        """(field path, text) of every prompt that may reference elements or voices."""
        texts = [("prompt", self.prompt)] if self.prompt is not None else []
        for index, shot in enumerate(self.multi_prompt or []):
            texts.append((f"multi_prompt[{index}].prompt", shot.prompt))
        return texts

    @property
    def duration_s(self) -> int:
        """The video length in whole seconds."""
        return int(self.duration)

    @property
    def output_size(self) -> tuple[int, int]:
        """(width, height) of the video the contract promises for ``aspect_ratio``."""
        return VIDEO_SIZES[self.aspect_ratio]


class ImageToImageRequest(_RequestModel):
    """Body of ``kling-3-image2image`` (sync and async).

    Unknown fields are ignored, as the hosted API does; ``null`` counts as omitted. ``prompt`` is
    required and must not be empty or only whitespace; every ``@Element<n>`` in it needs
    ``1 <= n <= len(elements)``.
    """

    image_url: UrlField
    prompt: str = Field(
        max_length=MAX_PROMPT_CHARS,
        description="The desired transformation; may reference @Element1..3.",
    )
    aspect_ratio: ImageAspectRatio = "16:9"
    elements: list[Element] = Field(default_factory=list, max_length=MAX_ELEMENTS)
    output_format: ImageOutputFormat = "png"
    resolution: ImageResolution = "1K"
    base64: Base64Field = False
    seed: SeedField = None
    webhook: WebhookField = None

    @field_validator("prompt")
    @classmethod
    def _prompt_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value

    @model_validator(mode="after")
    def _check_element_refs(self) -> ImageToImageRequest:
        texts = [("prompt", self.prompt)]
        _check_refs(texts, _ELEMENT_REF, "@Element{}", "elements", len(self.elements))
        return self

    @property
    def output_size(self) -> tuple[int, int]:
        """(width, height) of the image for ``aspect_ratio`` and ``resolution``."""
        return IMAGE_SIZES[(self.aspect_ratio, self.resolution)]


class CreateVoiceRequest(_RequestModel):
    """Body of ``kling-create-voice``: a 5-30 s clip of one clean speaker.

    Unknown fields are ignored, as the hosted API does; ``null`` counts as omitted. The audio's
    format and length are checked when it is fetched, not here.
    """

    voice_url: UrlField = Field(description="mp3, wav, mp4 or mov as URL, data: URI or base64.")
    voice_name: str | None = Field(default=None, min_length=1, max_length=MAX_VOICE_NAME_CHARS)


def _check_refs(
    texts: list[tuple[str, str]],
    pattern: re.Pattern[str],
    token: str,
    field: str,
    count: int,
) -> None:
    """Raise when a text references ``token`` number n outside ``1..count``."""
    for where, text in texts:
        for match in pattern.finditer(text):
            n = int(match.group(1))
            if 1 <= n <= count:
                continue
            valid = f"valid: {token.format(1)}..{token.format(count)}" if count else "none given"
            raise ValueError(
                f"{where}: references {token.format(n)} but {field} has {count} "
                f"entr{'y' if count == 1 else 'ies'} ({valid})"
            )


# --------------------------------------------------------------------------------------------
# Response models (helpers), for the OpenAPI document; the async path's are in jobs/schemas.py
# --------------------------------------------------------------------------------------------


class CreditsResponse(BaseModel):
    """Answer to ``GET /v1/get-user-credits``."""

    credits: float


class VoiceResponse(BaseModel):
    """Answer to ``kling-create-voice``."""

    voice_id: str


class ErrorResponse(BaseModel):
    """The error body of every non-2xx answer."""

    error: str
