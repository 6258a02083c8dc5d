"""Large JSON bodies are parsed on a thread in short steps (the event loop keeps running), with
exactly the result and errors of the plain parse."""

from __future__ import annotations

import base64
import json
import os
from typing import Any

import pytest

import kinema.api.validation as validation
from kinema.api.schemas import ImageToImageRequest
from kinema.api.validation import LONG_STRING, ParsedBody, parse_body, preparse
from kinema.errors import InvalidRequest

pytestmark = pytest.mark.unit

BIG = base64.b64encode(os.urandom(LONG_STRING)).decode()  # ~87 KB, past the long-string mark


def _plain(raw: bytes) -> Any:
    try:
        return json.loads(raw, parse_constant=validation._reject_constant)
    except (ValueError, RecursionError):
        return InvalidRequest


def _sliced(raw: bytes) -> Any:
    body = preparse([raw[: len(raw) // 2], raw[len(raw) // 2 :]])
    assert isinstance(body, ParsedBody) and bytes(body) == raw
    return InvalidRequest if body.error is not None else body.value


DOCUMENTS = [
    {"image_url": BIG, "prompt": "x"},
    {"elements": [{"frontal_image_url": BIG, "reference_image_urls": [BIG, "a", BIG]}]},
    {BIG: 1, "nested": {BIG: [BIG]}},
    [BIG, {"k": BIG}, [[BIG]]],
    BIG,
    {"a": 'q"uo\\te', "b": BIG, "c": "\\\\", "d": "\u00e9"},
    {"escaped": BIG[:-10] + '\\"' + BIG[-10:]},
    {"non_ascii": BIG + "\u00e9"},
    {"looks_like_a_mark": "\u0000deadbeef:0", "b": BIG},
]
RAW_DOCUMENTS = [
    b'{"a": "' + BIG.encode() + b'", "b": NaN}',
    b'{"a": "' + BIG.encode() + b'" "b": 1}',
    b'{"a": "' + BIG.encode() + b"\x01" + b'"}',
    b'{"a": "' + BIG.encode(),
    json.dumps({"a": BIG}).encode("utf-16"),
    b"\xef\xbb\xbf" + json.dumps({"a": BIG}).encode(),
    b'{"a": "' + b"\\" * 200 + BIG.encode() + b'"}',
]


@pytest.mark.parametrize("raw", [json.dumps(d).encode() for d in DOCUMENTS] + RAW_DOCUMENTS)
def test_the_sliced_parse_is_the_plain_parse(raw: bytes) -> None:
    assert _sliced(raw) == _plain(raw)


def test_a_large_body_is_never_parsed_in_one_long_call(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []
    loads = json.loads

    def recording(raw: bytes, **kwargs: Any) -> Any:
        seen.append(len(raw))
        return loads(raw, **kwargs)

    monkeypatch.setattr(validation.json, "loads", recording)
    image = base64.b64encode(os.urandom(15_000_000)).decode()  # a 20 MB body
    raw = json.dumps({"image_url": image, "end": image, "prompt": "x"}).encode()
    body = preparse([raw])
    assert body.value["image_url"] == image and body.value["end"] == image
    assert seen and max(seen) < 1024, seen  # the document without its long strings
    request = parse_body(ImageToImageRequest, body)  # not parsed again
    assert request.image_url == image and len(seen) == 1


def test_an_invalid_large_body_is_a_400_when_parsed() -> None:
    body = preparse([b'{"image_url": "' + BIG.encode() + b'", }'])
    with pytest.raises(InvalidRequest, match="request body is not valid JSON: Expecting"):
        parse_body(ImageToImageRequest, body)
