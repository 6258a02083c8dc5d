"""Turn request bodies into request models, and pydantic errors into one sentence for a 400.

The hosted API answers a bad request with ``{"error": "<one human sentence>"}``; pydantic's own
report is a list written for developers. :func:`format_validation_error` keeps the first error
and says it as ``<field path>: <what is wrong> (got <value>)``, with the path written the way a
client wrote the JSON: ``multi_prompt[1].prompt``. Model-level (cross-field) errors already start
with the field they are about and pass through as they are.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from kinema.errors import InvalidRequest

__all__ = ["ParsedBody", "format_location", "format_validation_error", "parse_body", "preparse"]

M = TypeVar("M", bound=BaseModel)

_Ctx = Mapping[str, Any]


def _got(value: object) -> str:
    """Render the rejected input, JSON-style and short."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _choices(expected: str) -> str:
    """Pydantic's ``'a', 'b' or 'c'`` as ``"a", "b", "c"`` (JSON quoting, as clients write it)."""
    return expected.replace(" or ", ", ").replace("'", '"')


def _num(value: object) -> str:
    """A bound as a client would write it: ``1`` rather than pydantic's ``1.0``."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _plural(n: object, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


# Each entry: pydantic error type -> (ctx, input) -> the sentence after "<path>: ".
_MESSAGES: dict[str, Callable[[_Ctx, object], str]] = {
    "missing": lambda c, v: "field required",
    "string_type": lambda c, v: f"must be a string (got {_got(v)})",
    "string_too_short": lambda c, v: (
        "must not be empty"
        if c.get("min_length") == 1
        else f"must be at least {_plural(c.get('min_length'), 'character')}"
    ),
    "string_too_long": lambda c, v: (
        f"must be at most {_plural(c.get('max_length'), 'character')} "
        f"(got {len(v) if isinstance(v, str) else '?'})"
    ),
    "too_short": lambda c, v: (
        f"must have at least {_plural(c.get('min_length'), 'item')} (got {c.get('actual_length')})"
    ),
    "too_long": lambda c, v: (
        f"must have at most {_plural(c.get('max_length'), 'item')} (got {c.get('actual_length')})"
    ),
    "literal_error": lambda c, v: (
        f"must be one of {_choices(str(c.get('expected', '')))} (got {_got(v)})"
    ),
    "bool_type": lambda c, v: f"must be true or false (got {_got(v)})",
    "bool_parsing": lambda c, v: f"must be true or false (got {_got(v)})",
    "int_type": lambda c, v: f"must be an integer (got {_got(v)})",
    "int_parsing": lambda c, v: f"must be an integer (got {_got(v)})",
    "int_from_float": lambda c, v: f"must be an integer (got {_got(v)})",
    "float_type": lambda c, v: f"must be a number (got {_got(v)})",
    "float_parsing": lambda c, v: f"must be a number (got {_got(v)})",
    "finite_number": lambda c, v: f"must be a finite number (got {_got(v)})",
    "greater_than_equal": lambda c, v: f"must be at least {_num(c.get('ge'))} (got {_got(v)})",
    "greater_than": lambda c, v: f"must be greater than {_num(c.get('gt'))} (got {_got(v)})",
    "less_than_equal": lambda c, v: f"must be at most {_num(c.get('le'))} (got {_got(v)})",
    "less_than": lambda c, v: f"must be less than {_num(c.get('lt'))} (got {_got(v)})",
    "list_type": lambda c, v: f"must be a list (got {_got(v)})",
    "model_type": lambda c, v: f"must be a JSON object (got {_got(v)})",
    "model_attributes_type": lambda c, v: f"must be a JSON object (got {_got(v)})",
    "dict_type": lambda c, v: f"must be a JSON object (got {_got(v)})",
}


def format_location(loc: Sequence[int | str]) -> str:
    """``("multi_prompt", 1, "prompt")`` → ``"multi_prompt[1].prompt"``; ``()`` → ``"body"``."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else part
    return path or "body"


def _message(error: ErrorDetails) -> str:
    """The sentence for one error, without its location."""
    kind = error["type"]
    ctx: _Ctx = error.get("ctx") or {}
    if kind == "value_error" and "error" in ctx:
        # Our own validators raise ValueError with a finished sentence; pydantic prefixes it.
        return str(ctx["error"])
    render = _MESSAGES.get(kind)
    if render is not None:
        return render(ctx, error["input"])
    # Fallback: pydantic's text, first letter lowered to read on after "<path>: ".
    msg = error["msg"]
    return msg[:1].lower() + msg[1:]


def format_validation_error(exc: ValidationError) -> str:
    """One precise sentence for the first error in ``exc``, naming the field path.

    Examples: ``multi_prompt[1].prompt: must be at most 512 characters (got 600)``,
    ``duration: must be one of "3".."15" (got "16")``, ``start_image_url: field required``,
    ``body: must be a JSON object (got [])``. An error raised by a model-level validator (empty
    location) is returned as its message alone, which already names the field.
    """
    errors = exc.errors(include_url=False)
    if not errors:  # pragma: no cover - pydantic never raises an empty ValidationError
        return "invalid request"
    first = errors[0]
    loc = first["loc"]
    message = _message(first)
    if not loc and first["type"] == "value_error":
        return message
    return f"{format_location(loc)}: {message}"


def _reject_constant(name: str) -> NoReturn:
    # json.loads accepts NaN/Infinity by default; they are not JSON and no field takes them.
    raise ValueError(f"{name} is not allowed in JSON")


def parse_body(model: type[M], raw: bytes) -> M:
    """Parse a JSON request body into ``model``; every failure is an :class:`InvalidRequest`.

    ``json.loads`` + ``model_validate`` (pydantic's lax Python mode, as FastAPI uses) rather than
    ``model_validate_json``: it lets ``duration`` take integers and strings alike, while the models
    themselves refuse booleans for numbers and non-booleans for booleans. A :class:`ParsedBody`
    (a large body, parsed on a thread as it was read) is not parsed again.
    """
    if isinstance(raw, ParsedBody):
        if raw.error is not None:
            raise raw.error
        data = raw.value
    else:
        data = _loads(raw)
    if not isinstance(data, dict):
        raise InvalidRequest("request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidRequest(format_validation_error(exc)) from exc


def _loads(raw: bytes) -> Any:
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        # JSONDecodeError and UnicodeDecodeError are both ValueErrors; very deep nesting
        # overflows the parser's recursion instead.
        detail = str(exc) if not isinstance(exc, RecursionError) else "nested too deeply"
        raise InvalidRequest(f"request body is not valid JSON: {detail}") from exc


# Large bodies ------------------------------------------------------------------------------------
#
# A large body is a few long strings (inline base64 images) in a small document. ``json.loads``
# holds the GIL throughout, so on a thread it still stops the event loop (a 100 MB body: 0.13 s
# of a 0.2 s parse). :func:`preparse` instead decodes each long string in slices (the GIL is free
# between two) and parses the rest, with a placeholder for each long string, in one short call.

LONG_STRING = 64 * 1024
"""Strings at least this long are decoded in slices."""
_SLICE = 1024 * 1024
_MAX_QUOTES = 20_000
"""More quotes than this and the body is not "a few long strings": parsed whole."""
_MAX_BACKSLASHES = 64
_NOT_PLAIN = bytes(range(0x20)) + b"\\"
"""What a long string may not contain to be sliced as it is (control characters are invalid in
JSON strings; escapes need the real parser)."""


class ParsedBody(bytes):
    """A request body with its JSON already parsed (by :func:`preparse`, on a thread):
    :func:`parse_body` takes ``value``, or raises ``error``."""

    value: Any = None
    error: InvalidRequest | None = None


def preparse(chunks: list[bytes]) -> ParsedBody:
    """Join a large body's ``chunks`` and parse its JSON, holding the GIL only in short steps;
    for a thread (``asyncio.to_thread``). Same result, and same errors, as :func:`parse_body`'s
    own parse, except that an error's position is not given."""
    body = ParsedBody(b"".join(chunks))
    try:
        body.value = _loads_sliced(body)
    except InvalidRequest as exc:
        body.error = exc
    return body


def _loads_sliced(raw: bytes) -> Any:
    spans = _long_strings(raw)
    if not spans:
        return _loads(raw)
    nonce = secrets.token_hex(8)
    pieces: list[bytes] = []
    long: dict[str, str] = {}
    at = 0
    for n, (start, end) in enumerate(spans):
        value = _plain_string(raw, start, end)
        if value is None:  # escapes, control characters or non-ASCII: the real parser
            return _loads(raw)
        mark = f"{nonce}:{n}"
        long["\x00" + mark] = value
        pieces += [raw[at:start], b"\\u0000" + mark.encode()]
        at = end
    pieces.append(raw[at:])
    try:
        data = json.loads(b"".join(pieces), parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:  # its position is the shortened document's
        raise InvalidRequest(f"request body is not valid JSON: {exc.msg}") from exc
    except (ValueError, RecursionError):
        return _loads(raw)
    return _restore(data, long)


def _long_strings(raw: bytes) -> list[tuple[int, int]] | None:
    """(start, end) of each string's content at least :data:`LONG_STRING` long; None when the
    body is not a few strings or cannot be split safely."""
    spans: list[tuple[int, int]] = []
    at, quotes = 0, 0
    while (opening := raw.find(b'"', at)) >= 0:
        closing = opening
        while True:
            closing = raw.find(b'"', closing + 1)
            quotes += 1
            if closing < 0 or quotes > _MAX_QUOTES:
                return None
            slashes = 0
            while raw[closing - 1 - slashes] == 0x5C:  # a backslash
                slashes += 1
                if slashes > _MAX_BACKSLASHES:
                    return None
            if slashes % 2 == 0:
                break
        if closing - opening - 1 >= LONG_STRING:
            spans.append((opening + 1, closing))
        at = closing + 1
    return spans


def _plain_string(raw: bytes, start: int, end: int) -> str | None:
    """The string ``raw[start:end]`` decoded slice by slice, or None unless it is plain ASCII
    without escapes or control characters."""
    parts: list[str] = []
    for at in range(start, end, _SLICE):
        piece = raw[at : min(at + _SLICE, end)]
        if not piece.isascii() or len(piece.translate(None, _NOT_PLAIN)) != len(piece):
            return None
        parts.append(piece.decode("ascii"))
    return "".join(parts)


def _restore(data: Any, long: dict[str, str]) -> Any:
    """``data`` with each placeholder (value or key) replaced by its long string."""
    if isinstance(data, str):
        return long.get(data, data)
    stack = [data]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key in [k for k in node if k in long]:
                node[long[key]] = node.pop(key)
            items: Any = node.items()
        elif isinstance(node, list):
            items = enumerate(node)
        else:
            continue
        for key, value in list(items):
            if isinstance(value, str):
                if value in long:
                    node[key] = long[value]
            elif isinstance(value, dict | list):
                stack.append(value)
    return data
