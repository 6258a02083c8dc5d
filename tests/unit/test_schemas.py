"""The request models are the hosted contract: defaults, enums, bounds, cross-field rules, and the
one-sentence 400 messages a client sees."""

from __future__ import annotations

import json
import math
from typing import Any, get_args

import pytest
from pydantic import BaseModel, ConfigDict, ValidationError

from kinema.api.schemas import (
    DEFAULT_NEGATIVE_PROMPT,
    IMAGE_SIZES,
    VIDEO_FPS,
    VIDEO_SIZES,
    CreateVoiceRequest,
    CreditsResponse,
    Element,
    ErrorResponse,
    ImageAspectRatio,
    ImageResolution,
    ImageToImageRequest,
    ImageToVideoRequest,
    Shot,
    VideoAspectRatio,
    VoiceResponse,
)
from kinema.api.validation import format_location, format_validation_error, parse_body
from kinema.errors import InvalidRequest
from kinema.jobs.schemas import AsyncSubmitResponse, ResultResponse, StatusResponse

pytestmark = pytest.mark.unit

START = "https://example.com/start.png"
IMAGE = "https://example.com/image.png"
FRONT = "https://example.com/front.png"


def i2v_body(**fields: Any) -> dict[str, Any]:
    return {"start_image_url": START, "prompt": "a cat walks", **fields}


def i2i_body(**fields: Any) -> dict[str, Any]:
    return {"image_url": IMAGE, "prompt": "make it winter", **fields}


def parse(model: type[BaseModel], body: Any) -> Any:
    return parse_body(model, json.dumps(body).encode())


def error_of(model: type[BaseModel], body: Any) -> str:
    with pytest.raises(InvalidRequest) as info:
        parse(model, body)
    assert info.value.status_code == 400
    return info.value.message


def elements(n: int) -> list[dict[str, Any]]:
    return [{"frontal_image_url": f"{FRONT}?{i}"} for i in range(n)]


def shots(*durations: Any, prompt: str = "a shot") -> list[dict[str, Any]]:
    return [{"prompt": prompt, "duration": d} for d in durations]


# --------------------------------------------------------------------------------------------
# Defaults
# --------------------------------------------------------------------------------------------


def test_image_to_video_defaults() -> None:
    req = parse(ImageToVideoRequest, {"start_image_url": START, "prompt": "p"})
    assert req.prompt == "p"
    assert req.start_image_url == START
    assert req.end_image_url is None
    assert req.aspect_ratio == "16:9"
    assert req.cfg_scale == 0.5
    assert req.duration == "5"
    assert req.duration_s == 5
    assert req.elements == []
    assert req.generate_audio is True
    assert req.multi_prompt is None
    assert req.negative_prompt == DEFAULT_NEGATIVE_PROMPT == "blur, distort, and low quality"
    assert req.shot_type == "customize"
    assert req.voice_ids == []
    assert req.base64 is False
    assert req.seed is None
    assert req.output_size == (1920, 1080)


def test_image_to_image_defaults() -> None:
    req = parse(ImageToImageRequest, {"image_url": IMAGE, "prompt": "p"})
    assert req.image_url == IMAGE
    assert req.prompt == "p"
    assert req.aspect_ratio == "16:9"
    assert req.elements == []
    assert req.output_format == "png"
    assert req.resolution == "1K"
    assert req.base64 is False
    assert req.seed is None
    assert req.output_size == (1024, 576)


def test_create_voice_defaults() -> None:
    req = parse(CreateVoiceRequest, {"voice_url": "https://example.com/v.mp3"})
    assert req.voice_url == "https://example.com/v.mp3"
    assert req.voice_name is None


def test_element_and_shot_defaults() -> None:
    element = Element.model_validate({"frontal_image_url": FRONT})
    assert element.reference_image_urls == []
    shot = Shot.model_validate({"prompt": "p"})
    assert shot.duration == "5"
    assert shot.duration_s == 5


# --------------------------------------------------------------------------------------------
# Enumerations
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "base", "field", "value"),
    [
        *[(ImageToVideoRequest, i2v_body, "aspect_ratio", v) for v in ("16:9", "9:16", "1:1")],
        *[(ImageToVideoRequest, i2v_body, "shot_type", v) for v in ("customize", "intelligence")],
        *[
            (ImageToImageRequest, i2i_body, "aspect_ratio", v)
            for v in ("16:9", "9:16", "1:1", "4:3", "3:4", "3:2", "2:3")
        ],
        *[(ImageToImageRequest, i2i_body, "output_format", v) for v in ("png", "jpeg", "webp")],
        *[(ImageToImageRequest, i2i_body, "resolution", v) for v in ("1K", "2K")],
    ],
)
def test_enum_accepts(model: type[BaseModel], base: Any, field: str, value: str) -> None:
    assert getattr(parse(model, base(**{field: value})), field) == value


@pytest.mark.parametrize(
    ("model", "base", "field", "value", "expected"),
    [
        (ImageToVideoRequest, i2v_body, "aspect_ratio", "4:3", '"16:9", "9:16", "1:1"'),
        (ImageToVideoRequest, i2v_body, "aspect_ratio", "16:10", '"16:9", "9:16", "1:1"'),
        (ImageToVideoRequest, i2v_body, "aspect_ratio", "", '"16:9", "9:16", "1:1"'),
        (ImageToVideoRequest, i2v_body, "aspect_ratio", 1.7, '"16:9", "9:16", "1:1"'),
        (ImageToVideoRequest, i2v_body, "shot_type", "auto", '"customize", "intelligence"'),
        (ImageToVideoRequest, i2v_body, "shot_type", "Customize", '"customize", "intelligence"'),
        (ImageToImageRequest, i2i_body, "aspect_ratio", "21:9", '"4:3", "3:4", "3:2", "2:3"'),
        (ImageToImageRequest, i2i_body, "output_format", "jpg", '"png", "jpeg", "webp"'),
        (ImageToImageRequest, i2i_body, "output_format", "PNG", '"png", "jpeg", "webp"'),
        (ImageToImageRequest, i2i_body, "resolution", "4K", '"1K", "2K"'),
        (ImageToImageRequest, i2i_body, "resolution", "1k", '"1K", "2K"'),
    ],
)
def test_enum_rejects(
    model: type[BaseModel], base: Any, field: str, value: Any, expected: str
) -> None:
    message = error_of(model, base(**{field: value}))
    assert message.startswith(f"{field}: must be one of ")
    assert expected in message
    assert f"(got {json.dumps(value)})" in message


# --------------------------------------------------------------------------------------------
# Duration
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "canonical"),
    [
        *[(str(n), str(n)) for n in range(3, 16)],
        *[(n, str(n)) for n in range(3, 16)],
        ("05", "5"),
        (10.0, "10"),
    ],
)
def test_duration_accepts(value: Any, canonical: str) -> None:
    req = parse(ImageToVideoRequest, i2v_body(duration=value))
    assert req.duration == canonical
    assert req.duration_s == int(canonical)


@pytest.mark.parametrize(
    "value",
    ["2", "16", 2, 16, 0, -5, "-5", 5.5, "5.5", "5.0", "abc", "", " 5", "1e1", True, False, [5],
     {"s": 5}, "9" * 5000],
)  # fmt: skip
def test_duration_rejects_and_lists_the_allowed_values(value: Any) -> None:
    message = error_of(ImageToVideoRequest, i2v_body(duration=value))
    assert message.startswith('duration: must be one of "3".."15" (got ')


@pytest.mark.parametrize(("value", "got"), [("16", '"16"'), (True, "true"), (5.5, "5.5")])
def test_duration_message_quotes_the_input(value: Any, got: str) -> None:
    message = error_of(ImageToVideoRequest, i2v_body(duration=value))
    assert message == f'duration: must be one of "3".."15" (got {got})'


@pytest.mark.parametrize(("value", "canonical"), [("1", "1"), (1, "1"), (15, "15"), (2.0, "2")])
def test_shot_duration_accepts(value: Any, canonical: str) -> None:
    assert Shot.model_validate({"prompt": "p", "duration": value}).duration == canonical


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (0, "each shot must last at least 1 second (got 0)"),
        ("0", 'each shot must last at least 1 second (got "0")'),
        (16, 'must be one of "1".."15" (got 16)'),
        (1.5, 'must be one of "1".."15" (got 1.5)'),
        ("x", 'must be one of "1".."15" (got "x")'),
        (True, 'must be one of "1".."15" (got true)'),
    ],
)
def test_shot_duration_rejects(value: Any, fragment: str) -> None:
    message = error_of(ImageToVideoRequest, i2v_body(multi_prompt=shots(value)))
    assert message == f"multi_prompt[0].duration: {fragment}"


# --------------------------------------------------------------------------------------------
# Numbers and booleans
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, 1, 0.0, 1.0, 0.25, 0.999])
def test_cfg_scale_accepts(value: float) -> None:
    assert parse(ImageToVideoRequest, i2v_body(cfg_scale=value)).cfg_scale == value


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (-0.01, "cfg_scale: must be at least 0 (got -0.01)"),
        (1.01, "cfg_scale: must be at most 1 (got 1.01)"),
        (2, "cfg_scale: must be at most 1 (got 2)"),
        (True, "cfg_scale: must be a number (got true)"),
        (False, "cfg_scale: must be a number (got false)"),
        ("abc", 'cfg_scale: must be a number (got "abc")'),
        ("nan", 'cfg_scale: must be a finite number (got "nan")'),
        ([0.5], "cfg_scale: must be a number (got [0.5])"),
    ],
)
def test_cfg_scale_rejects(value: Any, message: str) -> None:
    assert error_of(ImageToVideoRequest, i2v_body(cfg_scale=value)) == message


@pytest.mark.parametrize("field", ["generate_audio", "base64"])
@pytest.mark.parametrize("value", [True, False])
def test_bools_accept_true_and_false(field: str, value: bool) -> None:
    assert getattr(parse(ImageToVideoRequest, i2v_body(**{field: value})), field) is value


@pytest.mark.parametrize(
    ("model", "base", "field"),
    [
        (ImageToVideoRequest, i2v_body, "generate_audio"),
        (ImageToVideoRequest, i2v_body, "base64"),
        (ImageToImageRequest, i2i_body, "base64"),
    ],
)
@pytest.mark.parametrize("value", ["yes", "true", "false", 1, 0, "on", [True]])
def test_bools_are_strict(model: type[BaseModel], base: Any, field: str, value: Any) -> None:
    message = error_of(model, base(**{field: value}))
    assert message == f"{field}: must be true or false (got {json.dumps(value)})"


@pytest.mark.parametrize("model", [ImageToVideoRequest, ImageToImageRequest])
@pytest.mark.parametrize("value", [0, 1, 123456789, 2**32 - 1])
def test_seed_accepts(model: type[BaseModel], value: int) -> None:
    base = i2v_body if model is ImageToVideoRequest else i2i_body
    assert parse(model, base(seed=value)).seed == value


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (-1, "seed: must be at least 0 (got -1)"),
        (2**32, f"seed: must be at most {2**32 - 1} (got {2**32})"),
        (True, "seed: must be an integer (got true)"),
        (5.5, "seed: must be an integer (got 5.5)"),
        ("x", 'seed: must be an integer (got "x")'),
    ],
)
def test_seed_rejects(value: Any, message: str) -> None:
    assert error_of(ImageToVideoRequest, i2v_body(seed=value)) == message
    assert error_of(ImageToImageRequest, i2i_body(seed=value)) == message


# --------------------------------------------------------------------------------------------
# Required fields, strings and lengths
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "body", "field"),
    [
        (ImageToVideoRequest, {"prompt": "p"}, "start_image_url"),
        (ImageToVideoRequest, {"prompt": "p", "start_image_url": None}, "start_image_url"),
        (ImageToImageRequest, {"prompt": "p"}, "image_url"),
        (ImageToImageRequest, {"image_url": IMAGE}, "prompt"),
        (CreateVoiceRequest, {"voice_name": "v"}, "voice_url"),
        (ImageToVideoRequest, i2v_body(elements=[{}]), "elements[0].frontal_image_url"),
        (ImageToVideoRequest, i2v_body(multi_prompt=[{"duration": 5}]), "multi_prompt[0].prompt"),
    ],
)
def test_required_fields(model: type[BaseModel], body: dict[str, Any], field: str) -> None:
    assert error_of(model, body) == f"{field}: field required"


@pytest.mark.parametrize(
    ("model", "body", "field"),
    [
        (ImageToVideoRequest, i2v_body(start_image_url=""), "start_image_url"),
        (ImageToVideoRequest, i2v_body(end_image_url=""), "end_image_url"),
        (ImageToImageRequest, i2i_body(image_url=""), "image_url"),
        (ImageToImageRequest, i2i_body(prompt=""), "prompt"),
        (ImageToImageRequest, i2i_body(prompt=" \n\t"), "prompt"),
        (CreateVoiceRequest, {"voice_url": ""}, "voice_url"),
        (CreateVoiceRequest, {"voice_url": "u", "voice_name": ""}, "voice_name"),
        (ImageToVideoRequest, i2v_body(voice_ids=[""]), "voice_ids[0]"),
        (
            ImageToVideoRequest,
            i2v_body(elements=[{"frontal_image_url": FRONT, "reference_image_urls": [""]}]),
            "elements[0].reference_image_urls[0]",
        ),
        (
            ImageToVideoRequest,
            i2v_body(multi_prompt=shots(5, prompt="  ")),
            "multi_prompt[0].prompt",
        ),
    ],
)
def test_empty_strings_are_rejected(
    model: type[BaseModel], body: dict[str, Any], field: str
) -> None:
    assert error_of(model, body) == f"{field}: must not be empty"


@pytest.mark.parametrize(
    ("model", "base", "field", "value"),
    [
        (ImageToVideoRequest, i2v_body, "start_image_url", 5),
        (ImageToVideoRequest, i2v_body, "prompt", 5),
        (ImageToVideoRequest, i2v_body, "negative_prompt", ["x"]),
        (ImageToImageRequest, i2i_body, "prompt", True),
        (CreateVoiceRequest, lambda **f: {"voice_url": "u", **f}, "voice_name", 7),
    ],
)
def test_strings_must_be_strings(model: type[BaseModel], base: Any, field: str, value: Any) -> None:
    assert error_of(model, base(**{field: value})) == (
        f"{field}: must be a string (got {json.dumps(value)})"
    )


@pytest.mark.parametrize(
    ("model", "base", "field", "limit"),
    [
        (ImageToVideoRequest, i2v_body, "prompt", 2500),
        (ImageToVideoRequest, i2v_body, "negative_prompt", 2500),
        (ImageToImageRequest, i2i_body, "prompt", 2500),
        (CreateVoiceRequest, lambda **f: {"voice_url": "u", **f}, "voice_name", 20),
    ],
)
def test_string_length_limits(model: type[BaseModel], base: Any, field: str, limit: int) -> None:
    assert getattr(parse(model, base(**{field: "x" * limit})), field) == "x" * limit
    message = error_of(model, base(**{field: "x" * (limit + 1)}))
    assert message == f"{field}: must be at most {limit} characters (got {limit + 1})"


def test_shot_prompt_limit_is_512() -> None:
    ok = parse(ImageToVideoRequest, i2v_body(multi_prompt=shots(2, 3, prompt="x" * 512)))
    assert ok.multi_prompt[1].prompt == "x" * 512
    body = i2v_body(multi_prompt=[*shots(2), *shots(3, prompt="x" * 513)])
    assert error_of(ImageToVideoRequest, body) == (
        "multi_prompt[1].prompt: must be at most 512 characters (got 513)"
    )


def test_strings_are_not_stripped() -> None:
    req = parse(ImageToVideoRequest, i2v_body(prompt="  padded  ", negative_prompt=" n "))
    assert req.prompt == "  padded  "
    assert req.negative_prompt == " n "
    assert parse(ImageToVideoRequest, i2v_body(negative_prompt="")).negative_prompt == ""


def test_whitespace_prompt_counts_as_missing() -> None:
    req = parse(ImageToVideoRequest, i2v_body(prompt=" \n ", multi_prompt=shots(5)))
    assert req.prompt is None


# --------------------------------------------------------------------------------------------
# List limits
# --------------------------------------------------------------------------------------------


def _refs(n: int) -> list[dict[str, Any]]:
    return [{"frontal_image_url": FRONT, "reference_image_urls": [IMAGE] * n}]


@pytest.mark.parametrize(
    ("model", "base", "field", "make", "limit"),
    [
        (ImageToVideoRequest, i2v_body, "elements", elements, 3),
        (ImageToImageRequest, i2i_body, "elements", elements, 3),
        (ImageToVideoRequest, i2v_body, "voice_ids", lambda n: [f"v{i}" for i in range(n)], 2),
        (ImageToVideoRequest, i2v_body, "multi_prompt", lambda n: shots(*[1] * n), 5),
    ],
)
def test_list_limits(model: type[BaseModel], base: Any, field: str, make: Any, limit: int) -> None:
    # Shots of 1 s each must add up to the video's duration (3..15), so pick one that fits.
    extra = {"duration": limit} if field == "multi_prompt" else {}
    assert len(getattr(parse(model, base(**{field: make(limit)}, **extra)), field)) == limit
    message = error_of(model, base(**{field: make(limit + 1)}, **extra))
    assert message == f"{field}: must have at most {limit} items (got {limit + 1})"


def test_reference_image_limit() -> None:
    req = parse(ImageToVideoRequest, i2v_body(elements=_refs(3)))
    assert len(req.elements[0].reference_image_urls) == 3
    assert error_of(ImageToVideoRequest, i2v_body(elements=_refs(4))) == (
        "elements[0].reference_image_urls: must have at most 3 items (got 4)"
    )


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("elements", "x", 'elements: must be a list (got "x")'),
        ("elements", ["x"], 'elements[0]: must be a JSON object (got "x")'),
        ("multi_prompt", {"prompt": "p"}, 'multi_prompt: must be a list (got {"prompt": "p"})'),
        ("voice_ids", "v1", 'voice_ids: must be a list (got "v1")'),
        ("voice_ids", [1], "voice_ids[0]: must be a string (got 1)"),
    ],
)
def test_list_shapes(field: str, value: Any, message: str) -> None:
    assert error_of(ImageToVideoRequest, i2v_body(**{field: value})) == message


# --------------------------------------------------------------------------------------------
# Cross-field rules (image-to-video)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(i2v_body(), id="prompt only"),
        pytest.param(i2v_body(prompt=None, multi_prompt=shots(5)), id="multi_prompt only"),
        pytest.param(i2v_body(multi_prompt=shots(2, 3)), id="both prompt and multi_prompt"),
        pytest.param(i2v_body(shot_type="intelligence", duration=10), id="intelligence + prompt"),
        pytest.param(i2v_body(end_image_url=IMAGE), id="end image without shots"),
        pytest.param(i2v_body(duration=15, multi_prompt=shots(3, 3, 3, 3, 3)), id="5 shots 15 s"),
        pytest.param(i2v_body(duration="3", multi_prompt=shots(1, 1, 1)), id="1 s shots"),
        pytest.param(
            i2v_body(prompt="@Element1 and @Element3", elements=elements(3)), id="element refs"
        ),
        pytest.param(
            i2v_body(prompt="<<<voice_1>>> <<<voice_2>>>", voice_ids=["a", "b"]), id="voice refs"
        ),
        pytest.param(
            i2v_body(negative_prompt="@Element9 <<<voice_9>>>"), id="negative prompt not scanned"
        ),
        pytest.param(i2v_body(prompt="@element1 email@Elementary"), id="not element refs"),
        pytest.param(i2v_body(voice_ids=["a"], generate_audio=True), id="voices with audio"),
        pytest.param(i2v_body(multi_prompt=[]), id="empty multi_prompt is absent"),
    ],
)
def test_cross_field_rules_accept(body: dict[str, Any]) -> None:
    parse(ImageToVideoRequest, body)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(
            {"start_image_url": START},
            "prompt: required unless multi_prompt is given "
            "(an empty or whitespace-only prompt counts as missing)",
            id="neither",
        ),
        pytest.param(
            i2v_body(prompt="   "),
            "prompt: required unless multi_prompt is given "
            "(an empty or whitespace-only prompt counts as missing)",
            id="whitespace prompt",
        ),
        pytest.param(
            i2v_body(prompt="", multi_prompt=[]),
            "prompt: required unless multi_prompt is given "
            "(an empty or whitespace-only prompt counts as missing)",
            id="empty prompt and empty shots",
        ),
        pytest.param(
            i2v_body(shot_type="intelligence", multi_prompt=shots(5)),
            'multi_prompt: cannot be used with shot_type "intelligence", which splits prompt '
            'into shots itself; use shot_type "customize" or drop multi_prompt',
            id="intelligence with shots",
        ),
        pytest.param(
            i2v_body(shot_type="intelligence", prompt=None),
            "prompt: required unless multi_prompt is given "
            "(an empty or whitespace-only prompt counts as missing)",
            id="intelligence without prompt",
        ),
        pytest.param(
            i2v_body(end_image_url=IMAGE, multi_prompt=shots(5)),
            "end_image_url: cannot be combined with multi_prompt",
            id="end image with shots",
        ),
        pytest.param(
            i2v_body(multi_prompt=shots(2, 2)),
            'multi_prompt: shot durations add up to 4 s but duration is "5"; they must be equal',
            id="shots too short",
        ),
        pytest.param(
            i2v_body(duration=10, multi_prompt=shots(5, 6)),
            'multi_prompt: shot durations add up to 11 s but duration is "10"; they must be equal',
            id="shots too long",
        ),
        pytest.param(
            i2v_body(multi_prompt=[{"prompt": "a"}, {"prompt": "b"}]),
            'multi_prompt: shot durations add up to 10 s but duration is "5"; they must be equal',
            id="shot default 5 s each",
        ),
        pytest.param(
            i2v_body(prompt="@Element1 runs"),
            "prompt: references @Element1 but elements has 0 entries (none given)",
            id="element without elements",
        ),
        pytest.param(
            i2v_body(prompt="@Element1 meets @Element2", elements=elements(1)),
            "prompt: references @Element2 but elements has 1 entry (valid: @Element1..@Element1)",
            id="element out of range",
        ),
        pytest.param(
            i2v_body(prompt="@Element0", elements=elements(2)),
            "prompt: references @Element0 but elements has 2 entries (valid: @Element1..@Element2)",
            id="element zero",
        ),
        pytest.param(
            i2v_body(
                prompt=None,
                elements=elements(1),
                multi_prompt=[*shots(2), *shots(3, prompt="then @Element2")],
            ),
            "multi_prompt[1].prompt: references @Element2 but elements has 1 entry "
            "(valid: @Element1..@Element1)",
            id="element in shot",
        ),
        pytest.param(
            i2v_body(prompt="@Element4", multi_prompt=shots(5), elements=elements(3)),
            "prompt: references @Element4 but elements has 3 entries (valid: @Element1..@Element3)",
            id="prompt checked even with shots",
        ),
        pytest.param(
            i2v_body(prompt="she says <<<voice_1>>> hi"),
            "prompt: references <<<voice_1>>> but voice_ids has 0 entries (none given)",
            id="voice without voice_ids",
        ),
        pytest.param(
            i2v_body(prompt="<<<voice_2>>>", voice_ids=["a"]),
            "prompt: references <<<voice_2>>> but voice_ids has 1 entry "
            "(valid: <<<voice_1>>>..<<<voice_1>>>)",
            id="voice out of range",
        ),
        pytest.param(
            i2v_body(prompt=None, voice_ids=["a"], multi_prompt=shots(5, prompt="<<<voice_3>>>")),
            "multi_prompt[0].prompt: references <<<voice_3>>> but voice_ids has 1 entry "
            "(valid: <<<voice_1>>>..<<<voice_1>>>)",
            id="voice in shot",
        ),
        pytest.param(
            i2v_body(voice_ids=["a"], generate_audio=False),
            "voice_ids: requires generate_audio to be true",
            id="voices without audio",
        ),
    ],
)
def test_cross_field_rules_reject(body: dict[str, Any], message: str) -> None:
    assert error_of(ImageToVideoRequest, body) == message


def test_cross_field_errors_are_value_errors_when_constructed_directly() -> None:
    with pytest.raises(ValidationError) as info:
        ImageToVideoRequest.model_validate(i2v_body(end_image_url=IMAGE, multi_prompt=shots(5)))
    assert isinstance(info.value, ValueError)
    assert format_validation_error(info.value) == (
        "end_image_url: cannot be combined with multi_prompt"
    )


def test_multi_prompt_shots_are_kept_in_order() -> None:
    body = i2v_body(prompt=None, duration="8", multi_prompt=shots(3, "5"))
    req = parse(ImageToVideoRequest, body)
    assert [(s.prompt, s.duration, s.duration_s) for s in req.multi_prompt] == [
        ("a shot", "3", 3),
        ("a shot", "5", 5),
    ]


# --------------------------------------------------------------------------------------------
# Image-to-image element references
# --------------------------------------------------------------------------------------------


def test_image_to_image_element_refs() -> None:
    ok = parse(ImageToImageRequest, i2i_body(prompt="put @Element2 here", elements=elements(2)))
    assert len(ok.elements) == 2
    assert error_of(ImageToImageRequest, i2i_body(prompt="@Element1")) == (
        "prompt: references @Element1 but elements has 0 entries (none given)"
    )


# --------------------------------------------------------------------------------------------
# Unknown fields, nulls, the body itself
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "body"),
    [
        (ImageToVideoRequest, i2v_body(resolution="4K", mode="pro", callback_url="https://h")),
        (ImageToImageRequest, i2i_body(num_images=4, duration="5")),
        (CreateVoiceRequest, {"voice_url": "u", "language": "en"}),
        (ImageToVideoRequest, i2v_body(elements=[{"frontal_image_url": FRONT, "video_url": "v"}])),
        (ImageToVideoRequest, i2v_body(multi_prompt=[{"prompt": "p", "duration": 5, "x": 1}])),
    ],
)
def test_extra_fields_are_ignored(model: type[BaseModel], body: dict[str, Any]) -> None:
    req = parse(model, body)
    assert req.model_extra is None
    dumped = req.model_dump()
    for key in ("mode", "callback_url", "num_images", "language"):
        assert key not in dumped


def test_null_means_omitted() -> None:
    body = i2v_body(
        end_image_url=None,
        aspect_ratio=None,
        cfg_scale=None,
        duration=None,
        elements=None,
        generate_audio=None,
        multi_prompt=None,
        negative_prompt=None,
        shot_type=None,
        voice_ids=None,
        base64=None,
        seed=None,
    )
    req = parse(ImageToVideoRequest, body)
    defaults = parse(ImageToVideoRequest, i2v_body())
    assert req == defaults
    element = Element.model_validate({"frontal_image_url": FRONT, "reference_image_urls": None})
    assert element.reference_image_urls == []
    assert parse(CreateVoiceRequest, {"voice_url": "u", "voice_name": None}).voice_name is None


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "request body is not valid JSON: Expecting value: line 1 column 1 (char 0)"),
        (b"{", "request body is not valid JSON: "),
        (b'{"prompt": "a",}', "request body is not valid JSON: "),
        (b'{"cfg_scale": NaN}', "request body is not valid JSON: NaN is not allowed in JSON"),
        (b'{"seed": Infinity}', "request body is not valid JSON: Infinity is not allowed"),
        (b"\xff\xfe\x00", "request body is not valid JSON: "),
        (b"[" * 100_000, "request body is not valid JSON: nested too deeply"),
        (b"[]", "request body must be a JSON object"),
        (b'"text"', "request body must be a JSON object"),
        (b"null", "request body must be a JSON object"),
        (b"42", "request body must be a JSON object"),
    ],
)
def test_parse_body_rejects_bad_bodies(raw: bytes, message: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_body(ImageToVideoRequest, raw)
    assert info.value.status_code == 400
    assert info.value.message.startswith(message)


def test_parse_body_returns_the_model() -> None:
    raw = json.dumps(i2v_body(duration=7, seed=3)).encode()
    req = parse_body(ImageToVideoRequest, raw)
    assert isinstance(req, ImageToVideoRequest)
    assert (req.duration, req.seed) == ("7", 3)


def test_parse_body_keeps_the_cause() -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_body(ImageToVideoRequest, b'{"prompt": "p"}')
    assert isinstance(info.value.__cause__, ValidationError)


def test_model_dump_round_trips() -> None:
    body = i2v_body(duration=8, elements=elements(1), multi_prompt=shots(3, 5), seed=9)
    req = parse(ImageToVideoRequest, body)
    again = parse(ImageToVideoRequest, req.model_dump())
    assert again == req
    assert req.model_dump()["duration"] == "8"


# --------------------------------------------------------------------------------------------
# format_validation_error / format_location
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("loc", "path"),
    [
        ((), "body"),
        (("prompt",), "prompt"),
        (("multi_prompt", 1, "prompt"), "multi_prompt[1].prompt"),
        (("elements", 0, "reference_image_urls", 2), "elements[0].reference_image_urls[2]"),
    ],
)
def test_format_location(loc: tuple[int | str, ...], path: str) -> None:
    assert format_location(loc) == path


def test_body_must_be_an_object_when_validated_directly() -> None:
    with pytest.raises(ValidationError) as info:
        ImageToVideoRequest.model_validate([1])
    assert format_validation_error(info.value) == "body: must be a JSON object (got [1])"


def test_only_the_first_error_is_reported() -> None:
    with pytest.raises(ValidationError) as info:
        ImageToVideoRequest.model_validate({"prompt": 5, "aspect_ratio": "x"})
    message = format_validation_error(info.value)
    assert message == "prompt: must be a string (got 5)"


def test_long_inputs_are_shortened_in_messages() -> None:
    message = error_of(ImageToVideoRequest, i2v_body(aspect_ratio="x" * 100))
    got = '"' + "x" * 36 + "..."
    assert message == f'aspect_ratio: must be one of "16:9", "9:16", "1:1" (got {got})'


def test_unknown_error_types_fall_back_to_pydantic_text() -> None:
    class Odd(BaseModel):
        model_config = ConfigDict(extra="forbid")

    with pytest.raises(ValidationError) as info:
        Odd.model_validate({"surprise": 1})
    assert format_validation_error(info.value) == "surprise: extra inputs are not permitted"


# --------------------------------------------------------------------------------------------
# Output size tables
# --------------------------------------------------------------------------------------------


def test_video_sizes_cover_every_aspect_ratio() -> None:
    assert set(VIDEO_SIZES) == set(get_args(VideoAspectRatio))
    assert VIDEO_SIZES == {"16:9": (1920, 1080), "9:16": (1080, 1920), "1:1": (1080, 1080)}
    assert VIDEO_FPS == 24


@pytest.mark.parametrize("aspect", ["16:9", "9:16", "1:1"])
def test_image_to_video_output_size(aspect: str) -> None:
    assert (
        parse(ImageToVideoRequest, i2v_body(aspect_ratio=aspect)).output_size
        == (
            VIDEO_SIZES[aspect]  # type: ignore[index]
        )
    )


def test_image_sizes_cover_every_combination() -> None:
    expected = {(a, r) for a in get_args(ImageAspectRatio) for r in get_args(ImageResolution)}
    assert set(IMAGE_SIZES) == expected


@pytest.mark.parametrize(("key", "size"), sorted(IMAGE_SIZES.items()))
def test_image_size_rules(key: tuple[str, str], size: tuple[int, int]) -> None:
    aspect, resolution = key
    w, h = size
    aw, ah = (int(x) for x in aspect.split(":"))
    assert w % 16 == 0
    assert h % 16 == 0
    assert max(w, h) == {"1K": 1024, "2K": 2048}[resolution]
    assert (w >= h) == (aw >= ah)
    # The short side is the multiple of 16 closest to the exact ratio.
    long_side = max(w, h)
    exact_short = long_side * min(aw, ah) / max(aw, ah)
    best = min(range(16, long_side + 1, 16), key=lambda s: abs(s - exact_short))
    assert min(w, h) == best
    assert math.isclose(w / h, aw / ah, rel_tol=0.01)


@pytest.mark.parametrize(("key", "size"), sorted(IMAGE_SIZES.items()))
def test_image_to_image_output_size(key: tuple[str, str], size: tuple[int, int]) -> None:
    aspect, resolution = key
    req = parse(ImageToImageRequest, i2i_body(aspect_ratio=aspect, resolution=resolution))
    assert req.output_size == size


# --------------------------------------------------------------------------------------------
# Response models and the OpenAPI schema
# --------------------------------------------------------------------------------------------


def test_response_models() -> None:
    submit = AsyncSubmitResponse(
        request_id="r1", poll_url="/v1/requests/r1", status_url="/s", response_url="/r"
    )
    assert submit.model_dump() == {
        "request_id": "r1",
        "status": "QUEUED",
        "poll_url": "/v1/requests/r1",
        "status_url": "/s",
        "response_url": "/r",
    }
    status = StatusResponse(
        request_id="r1", status="PROCESSING", status_url="/s", response_url="/r"
    )
    assert status.model_dump(exclude_none=True) == {
        "request_id": "r1",
        "status": "PROCESSING",
        "status_url": "/s",
        "response_url": "/r",
        "metrics": {},
    }
    status = StatusResponse(
        request_id="r1", status="QUEUED", status_url="/s", response_url="/r", queue_position=0,
        progress=0.0,
    )  # fmt: skip
    assert status.model_dump(exclude_none=True)["queue_position"] == 0
    result = ResultResponse(
        request_id="r1", status="COMPLETED", output="https://o/x.mp4", metrics={"cost": 0.5}
    )
    assert result.model_dump(exclude_none=True) == {
        "request_id": "r1",
        "status": "COMPLETED",
        "output": "https://o/x.mp4",
        "metrics": {"cost": 0.5},
    }
    assert CreditsResponse(credits=1.5).model_dump() == {"credits": 1.5}
    assert VoiceResponse(voice_id="v").model_dump() == {"voice_id": "v"}
    assert ErrorResponse(error="bad").model_dump() == {"error": "bad"}


@pytest.mark.parametrize("progress", [-0.1, 1.1])
def test_status_progress_is_a_fraction(progress: float) -> None:
    with pytest.raises(ValidationError):
        StatusResponse(
            request_id="r", status="PROCESSING", status_url="/s", response_url="/r",
            progress=progress,
        )  # fmt: skip


@pytest.mark.parametrize(
    "model", [ImageToVideoRequest, ImageToImageRequest, CreateVoiceRequest, StatusResponse]
)
def test_json_schema_builds(model: type[BaseModel]) -> None:
    schema = model.model_json_schema()
    assert schema["type"] == "object"


def test_duration_schema_documents_strings_and_integers() -> None:
    prop = ImageToVideoRequest.model_json_schema()["properties"]["duration"]
    assert prop["default"] == "5"
    kinds = {branch["type"] for branch in prop["anyOf"]}
    assert kinds == {"string", "integer"}


@pytest.mark.parametrize(
    ("model", "body"), [(ImageToVideoRequest, i2v_body()), (ImageToImageRequest, i2i_body())]
)
def test_webhook_is_an_http_url_extension(model: type[BaseModel], body: dict[str, Any]) -> None:
    assert parse(model, {**body, "webhook": "https://hooks.example/k?x=1"}).webhook == (  # type: ignore[attr-defined]
        "https://hooks.example/k?x=1"
    )
    assert parse(model, body).webhook is None  # type: ignore[attr-defined]
    for bad in ("ftp://hooks.example/k", "hooks.example/k", "https://", ""):
        assert error_of(model, {**body, "webhook": bad}) == "webhook: must be an http(s) URL"
    too_long = "https://h/" + "a" * 2048
    assert error_of(model, {**body, "webhook": too_long}).startswith("webhook: ")
