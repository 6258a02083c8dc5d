"""The two generation request models, fuzzed through the whole v2 submit path (an in-process
app, API-only: accepted jobs stay QUEUED) with derandomized Hypothesis:

- requests valid by the contract (``/work/shared/CONTRACT.md``: every field, omitted or
  ``null`` or given in each accepted form, shots adding up, element references in range, inline
  PNG/JPEG/WEBP/GIF inputs) are valid to the model and to the static presets' capabilities, are
  accepted (200 and a request id), and are a QUEUED job of that model, priced as the endpoint
  prices it, whose status a client can read;
- each such request broken in one known way is a 400 whose message starts with the field it is
  about — the very message the model and capability checks give, when they are what refuses it;
- any JSON object over the model's fields is a 200 or a 400 with a message, never a 5xx.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from PIL import Image

from kinema.api.endpoints import ENDPOINTS
from kinema.api.service import configured_presets
from kinema.api.validation import parse_body
from kinema.errors import InvalidRequest
from tests.conftest import Ctx, app_context, make_settings

# One app per module on its own SQLite database (what is fuzzed is the request path, not the
# store; the PostgreSQL run covers job creation elsewhere).
pytestmark = [pytest.mark.integration, pytest.mark.embedded_only, pytest.mark.timeout(300)]

EXAMPLES = 150
BREAK_EXAMPLES = 8
VIDEO = "kling-3-standard-image2video"
IMAGE = "kling-3-image2image"
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)


def _image(fmt: str, size: tuple[int, int], mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, (30, 160, 90) if mode == "RGB" else (30, 160, 90, 128)).save(
        buf, format=fmt
    )
    return buf.getvalue()


_INPUTS = [
    ("png", _image("PNG", (64, 48))),
    ("png", _image("PNG", (33, 65), "RGBA")),
    ("jpeg", _image("JPEG", (40, 30))),
    ("webp", _image("WEBP", (32, 32))),
    ("gif", _image("GIF", (16, 24))),
]
IMAGES = [base64.b64encode(data).decode() for _, data in _INPUTS] + [
    f"data:image/{fmt};base64," + base64.b64encode(data).decode() for fmt, data in _INPUTS
]
"""Inline inputs, as bare base64 and as data: URIs (an http(s) URL would leave loopback)."""

# --------------------------------------------------------------------------------------------
# Valid requests, from the contract
# --------------------------------------------------------------------------------------------

_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="@<"), max_size=40)
images = st.sampled_from(IMAGES)


def _optional(
    draw: st.DrawFn, body: dict[str, Any], name: str, values: st.SearchStrategy[Any]
) -> None:
    """Omit the field, send it as ``null`` (the same as omitted) or give it a value."""
    choice = draw(st.sampled_from(["omit", "null", "value"]))
    if choice == "null":
        body[name] = None
    elif choice == "value":
        body[name] = draw(values)


@st.composite
def prompts(draw: st.DrawFn, elements: int, limit: int) -> str:
    """Text that is not blank, with ``@Element<n>`` references within ``1..elements``."""
    parts = [draw(st.sampled_from(["a fox", "Waves", "城市", "ÉTÉ", "x"]))]
    for _ in range(draw(st.integers(0, 5))):
        if elements and draw(st.booleans()):
            parts.append(f"@Element{draw(st.integers(1, elements))}")
        else:
            parts.append(draw(_text))
    text = " ".join(parts)  # at most 5 × 40 characters + references: under any limit
    if draw(st.integers(0, 9)) == 0:
        text = (text + " " + "y" * limit)[:limit]  # exactly the longest accepted
    return text


@st.composite
def elements(draw: st.DrawFn) -> list[dict[str, Any]]:
    out = []
    for _ in range(draw(st.integers(0, 3))):
        element: dict[str, Any] = {"frontal_image_url": draw(images)}
        _optional(draw, element, "reference_image_urls", st.lists(images, max_size=3))
        out.append(element)
    return out


def _seconds(draw: st.DrawFn, n: int) -> object:
    """``n`` seconds in one of the accepted forms: "5", "05", 5, 5.0."""
    return draw(st.sampled_from([str(n), f"{n:02d}", n, float(n)]))


@st.composite
def video_bodies(draw: st.DrawFn) -> dict[str, Any]:
    els = draw(elements())
    duration = draw(st.integers(3, 15))
    mode = draw(st.sampled_from(["prompt", "shots", "both", "intelligence"]))
    body: dict[str, Any] = {"start_image_url": draw(images)}
    if els or draw(st.booleans()):
        body["elements"] = els
    if mode != "shots":
        body["prompt"] = draw(prompts(len(els), 2500))
    if mode == "intelligence":
        body["shot_type"] = "intelligence"
    elif draw(st.booleans()):
        body["shot_type"] = "customize"
    if mode in ("shots", "both"):
        count = draw(st.integers(1, min(5, duration)))
        cuts = sorted(
            draw(st.sets(st.integers(1, duration - 1), min_size=count - 1, max_size=count - 1))
        )
        lengths = [b - a for a, b in zip([0, *cuts], [*cuts, duration], strict=True)]
        shots = []
        for length in lengths:
            shot: dict[str, Any] = {"prompt": draw(prompts(len(els), 512))}
            if length != 5 or draw(st.booleans()):  # "5" is a shot's default
                shot["duration"] = _seconds(draw, length)
            shots.append(shot)
        body["multi_prompt"] = shots
    else:
        _optional(draw, body, "end_image_url", images)
    if duration != 5 or draw(st.booleans()):
        body["duration"] = _seconds(draw, duration)
    _optional(draw, body, "aspect_ratio", st.sampled_from(["16:9", "9:16", "1:1"]))
    _optional(draw, body, "cfg_scale", st.one_of(st.floats(0, 1), st.sampled_from([0, 1])))
    _optional(draw, body, "generate_audio", st.booleans())
    _optional(draw, body, "negative_prompt", _text)
    _optional(draw, body, "voice_ids", st.just([]))
    _common(draw, body)
    return body


@st.composite
def image_bodies(draw: st.DrawFn) -> dict[str, Any]:
    els = draw(elements())
    body: dict[str, Any] = {"image_url": draw(images), "prompt": draw(prompts(len(els), 2500))}
    if els or draw(st.booleans()):
        body["elements"] = els
    ratios = ["16:9", "9:16", "1:1", "4:3", "3:4", "3:2", "2:3"]
    _optional(draw, body, "aspect_ratio", st.sampled_from(ratios))
    _optional(draw, body, "output_format", st.sampled_from(["png", "jpeg", "webp"]))
    _optional(draw, body, "resolution", st.sampled_from(["1K", "2K"]))
    _common(draw, body)
    return body


def _common(draw: st.DrawFn, body: dict[str, Any]) -> None:
    _optional(draw, body, "seed", st.integers(0, 2**32 - 1))
    _optional(draw, body, "base64", st.booleans())
    _optional(draw, body, "webhook", st.just("http://127.0.0.1:9/hook"))
    if draw(st.booleans()):
        body["not_in_the_contract"] = draw(_text)  # unknown fields are ignored


# --------------------------------------------------------------------------------------------
# The same requests, broken in one known way
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Break:
    """One way to break a valid body: ``apply`` it; the 400 must name ``field``. ``media``: the
    input itself is bad, which only the submit path (not the model) finds."""

    field: str
    apply: Callable[[dict[str, Any]], None]
    media: bool = False


def _set(**values: Any) -> Callable[[dict[str, Any]], None]:
    return lambda body: body.update(values)


def _drop(*names: str) -> Callable[[dict[str, Any]], None]:
    def apply(body: dict[str, Any]) -> None:
        for name in names:
            body.pop(name, None)

    return apply


def _then(*steps: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    def apply(body: dict[str, Any]) -> None:
        for step in steps:
            step(body)

    return apply


def _extra_ref(body: dict[str, Any]) -> None:
    n = len(body.get("elements") or []) + 1
    body["prompt"] = f"{body.get('prompt') or 'a'} @Element{n}"


def _junk_frontal(body: dict[str, Any]) -> None:
    """The first element's frontal image is not an image (the element count is kept, so the
    prompt's references stay valid)."""
    body["elements"] = body.get("elements") or [{}]
    body["elements"][0] = {**body["elements"][0], "frontal_image_url": JUNK_IMAGE}


def _element(urls: int) -> dict[str, Any]:
    return {"frontal_image_url": IMAGES[0], "reference_image_urls": IMAGES[:1] * urls}


JUNK_IMAGE = base64.b64encode(b"\x89PNG\r\n\x1a\n not really").decode()
COMMON = [
    Break("seed", _set(seed=-1)),
    Break("seed", _set(seed=2**32)),
    Break("seed", _set(seed=True)),
    Break("seed", _set(seed=1.5)),
    Break("webhook", _set(webhook="ftp://127.0.0.1/x")),
    Break("webhook", _set(webhook="http://")),
    Break("base64", _set(base64="true")),
    Break("elements", _set(elements=[_element(0)] * 4)),
    Break("elements[0].reference_image_urls", _set(elements=[_element(4)])),
    Break("elements[0].frontal_image_url", _set(elements=[{"frontal_image_url": ""}])),
    Break("elements[0].frontal_image_url", _set(elements=[{"reference_image_urls": []}])),
    Break("prompt", _extra_ref),
    Break("elements[0].frontal_image_url", _junk_frontal, media=True),
]
VIDEO_BREAKS = [
    *COMMON,
    Break("start_image_url", _drop("start_image_url")),
    Break("start_image_url", _set(start_image_url=JUNK_IMAGE), media=True),
    Break("start_image_url", _set(start_image_url="data:text/plain;base64,aGk="), media=True),
    Break("start_image_url", _set(start_image_url="file:///etc/passwd"), media=True),
    Break("duration", _then(_drop("multi_prompt"), _set(duration=2))),
    Break("duration", _then(_drop("multi_prompt"), _set(duration="16"))),
    Break("duration", _then(_drop("multi_prompt"), _set(duration=3.5))),
    Break("duration", _then(_drop("multi_prompt"), _set(duration=True))),
    Break("aspect_ratio", _set(aspect_ratio="4:3")),
    Break("cfg_scale", _set(cfg_scale=1.01)),
    Break("cfg_scale", _set(cfg_scale=-0.5)),
    Break("cfg_scale", _set(cfg_scale=True)),
    Break("generate_audio", _set(generate_audio=1)),
    Break("shot_type", _set(shot_type="auto")),
    Break("prompt", _then(_drop("multi_prompt"), _set(prompt=" \t "))),
    Break("prompt", _set(prompt="x" * 2501)),
    Break("negative_prompt", _set(negative_prompt="x" * 2501)),
    Break(
        "multi_prompt",
        _then(
            _drop("end_image_url"),
            _set(
                shot_type="customize", duration="6", multi_prompt=[{"prompt": "a", "duration": "5"}]
            ),
        ),
    ),
    Break(
        "multi_prompt",
        _set(
            shot_type="intelligence",
            prompt="a",
            multi_prompt=[{"prompt": "a", "duration": 5}],
            duration=5,
        ),
    ),
    Break("multi_prompt", _set(multi_prompt=[{"prompt": "a", "duration": "1"}] * 6, duration="6")),
    Break(
        "multi_prompt[0].prompt",
        _then(
            _drop("end_image_url"),
            _set(shot_type="customize", multi_prompt=[{"prompt": " "}], duration="5"),
        ),
    ),
    Break(
        "multi_prompt[0].duration",
        _then(
            _drop("end_image_url"),
            _set(
                shot_type="customize", multi_prompt=[{"prompt": "a", "duration": 0}], duration="5"
            ),
        ),
    ),
    Break(
        "end_image_url",
        _set(
            shot_type="customize",
            end_image_url=IMAGES[0],
            multi_prompt=[{"prompt": "a"}],
            duration="5",
        ),
    ),
    Break("voice_ids", _set(generate_audio=False, voice_ids=["v1"])),
    Break("voice_ids[0]", _set(generate_audio=True, voice_ids=["v1"])),
]
IMAGE_BREAKS = [
    *COMMON,
    Break("image_url", _drop("image_url")),
    Break("image_url", _set(image_url=JUNK_IMAGE), media=True),
    Break("image_url", _set(image_url="aGVsbG8="), media=True),
    Break("prompt", _drop("prompt")),
    Break("prompt", _set(prompt="  ")),
    Break("prompt", _set(prompt="x" * 2501)),
    Break("aspect_ratio", _set(aspect_ratio="21:9")),
    Break("output_format", _set(output_format="gif")),
    Break("resolution", _set(resolution="4K")),
]

# --------------------------------------------------------------------------------------------
# Any JSON over the model's fields
# --------------------------------------------------------------------------------------------

_json: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def junk(slug: str) -> st.SearchStrategy[dict[str, Any]]:
    """Objects of the model's fields (any JSON value each; no webhook: a random host would be
    looked up) mixed with valid inputs."""
    model = ENDPOINTS[slug].request_model
    fields = [name for name in model.model_fields if name != "webhook"]
    value = st.one_of(
        _json,
        images,
        st.lists(st.fixed_dictionaries({"frontal_image_url": images, "prompt": _text})),
    )
    return st.fixed_dictionaries({}, optional=dict.fromkeys(fields, value))


# --------------------------------------------------------------------------------------------
# The app, and what the checks before the media say
# --------------------------------------------------------------------------------------------


class App:
    """An API-only app (its jobs stay QUEUED) on its own event loop, and a key."""

    def __init__(self, data_dir: Path) -> None:
        self.settings = make_settings(
            data_dir, engines={"workers": 0}, rate_limit={"default": "1000000/minute"}
        )
        self.presets = configured_presets(self.settings)
        self.loop = asyncio.Runner()
        self.context = app_context(self.settings, None)
        self.ctx: Ctx = self.loop.run(self.context.__aenter__())
        self.key = self.loop.run(self.ctx.key(credits=1_000_000))

    def expected(self, slug: str, body: dict[str, Any]) -> str | None:
        """The 400 message of the body and capability checks, None when they pass."""
        endpoint = ENDPOINTS[slug]
        try:
            request = parse_body(endpoint.request_model, json.dumps(body).encode())
            endpoint.check(request, self.presets)
        except InvalidRequest as exc:
            return exc.message
        return None

    def submit(self, slug: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        async def post() -> tuple[int, dict[str, Any]]:
            r = await self.ctx.client.post(
                f"/v2/{slug}",
                content=json.dumps(body).encode(),  # Infinity as Python writes it, too
                headers={"x-api-key": self.key, "content-type": "application/json"},
            )
            return r.status_code, r.json()

        return self.loop.run(post())

    def assert_job(self, slug: str, body: dict[str, Any], answer: dict[str, Any]) -> None:
        """The accepted request is a QUEUED job of ``slug`` at the endpoint's price."""
        endpoint = ENDPOINTS[slug]
        request = parse_body(endpoint.request_model, json.dumps(body).encode())
        price = endpoint.price(
            endpoint.plan(request, "j", self.presets).spec, self.settings.billing
        )

        async def check() -> None:
            rid = answer["request_id"]
            job = await self.ctx.svc.jobs.get(rid)
            assert job is not None, f"no job {rid}"
            assert (job.model, job.status.value, job.price_micros) == (slug, "QUEUED", price)
            r = await self.ctx.client.get(
                f"/v2/requests/{rid}/status", headers={"x-api-key": self.key}
            )
            assert (r.status_code, r.json()["status"]) == (200, "QUEUED"), r.text

        self.loop.run(check())

    def close(self) -> None:
        self.loop.run(self.context.__aexit__(None, None, None))
        self.loop.close()


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    app = App(tmp_path_factory.mktemp("fuzz-models"))
    yield app
    app.close()


# --------------------------------------------------------------------------------------------
# The tests
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("slug", "bodies"), [(VIDEO, video_bodies()), (IMAGE, image_bodies())])
def test_valid_requests_are_accepted_and_become_jobs(
    app: App, slug: str, bodies: st.SearchStrategy[dict[str, Any]]
) -> None:
    seen: list[str] = []

    @FUZZ
    @given(body=bodies)
    def call(body: dict[str, Any]) -> None:
        assert app.expected(slug, body) is None  # the contract's valid is the model's valid
        status, answer = app.submit(slug, body)
        assert status == 200, answer
        app.assert_job(slug, body, answer)
        seen.append(answer["request_id"])

    call()
    assert len(set(seen)) >= EXAMPLES  # each example a job of its own


@pytest.mark.parametrize(
    ("slug", "bodies", "breaks"),
    [(VIDEO, video_bodies(), VIDEO_BREAKS), (IMAGE, image_bodies(), IMAGE_BREAKS)],
)
def test_each_broken_field_is_a_400_naming_it(
    app: App, slug: str, bodies: st.SearchStrategy[dict[str, Any]], breaks: list[Break]
) -> None:
    tried: list[str] = []
    for broken in breaks:  # each way of breaking, on BREAK_EXAMPLES valid bodies
        _try_break(app, slug, bodies, broken, tried)
    assert len(tried) == len(breaks) * BREAK_EXAMPLES


def _try_break(
    app: App,
    slug: str,
    bodies: st.SearchStrategy[dict[str, Any]],
    broken: Break,
    tried: list[str],
) -> None:
    @settings(FUZZ, max_examples=BREAK_EXAMPLES)
    @given(body=bodies)
    def call(body: dict[str, Any]) -> None:
        broken.apply(body)
        status, answer = app.submit(slug, body)
        assert status == 400, (broken.field, body, answer)
        assert answer["error"].startswith(f"{broken.field}: "), (broken.field, answer)
        expected = app.expected(slug, body)
        if broken.media:
            assert expected is None  # only the submit path reads the input
        elif broken.field != "voice_ids[0]":  # the submit path checks voices exist first
            assert answer["error"] == expected
        tried.append(broken.field)

    call()


@pytest.mark.parametrize("slug", [VIDEO, IMAGE])
def test_any_object_gets_a_200_or_a_400_with_a_message(app: App, slug: str) -> None:
    statuses: list[int] = []

    @FUZZ
    @given(body=junk(slug))
    def call(body: dict[str, Any]) -> None:
        status, answer = app.submit(slug, body)
        assert status in (200, 400), (body, answer)
        expected = app.expected(slug, body)
        if status == 400:
            assert answer["error"] and isinstance(answer["error"], str)
            if expected is not None and "voice_ids" not in answer["error"]:
                assert answer["error"] == expected
        else:
            assert expected is None, (body, answer)
            app.assert_job(slug, body, answer)
        statuses.append(status)

    call()
    assert len(statuses) >= EXAMPLES
