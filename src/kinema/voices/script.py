"""A shot prompt's dialogue: the quoted lines to speak, each with its speaker and language.

Pure Python (no torch): the API checks a script at submit; the worker speaks it.

The rule, applied to each shot's prompt on its own, left to right:

- **Lines.** A line is the text inside a pair of quotes: ASCII ``"…"``, Chinese ``“…”`` or
  corner brackets ``「…」``, each closed by its own partner. Quotes do not nest; an opening
  quote with no partner, or a pair holding only spaces, is no line (it stays prompt text).
  The line's text is the quoted text with its outer whitespace removed.
- **Speaker.** ``<<<voice_n>>>`` marks the speaker of the first quoted line after it, with any
  text between them (``<<<voice_1>>> says "Hi"``, ``<<<voice_1>>>: "Hi"``). A marker speaks
  one line: a second line after it, with no marker of its own, is unmarked. A marker with no
  line after it before the next marker or the prompt's end names a character without speaking
  (it still has to exist). ``n`` counts from 1 and must be at most ``len(voice_ids)``; a marker
  beyond it is an :class:`~kinema.errors.InvalidRequest` (400) naming it, as is a marker
  inside a quoted line (put it before the quote).
- **Unmarked lines** are spoken too, in the speech engine's own voice (no reference clip):
  once ``voice_ids`` are given the speech track is the one the video follows, so a line left
  to the video model would not be heard. ``speaker`` is then None.
- **Language.** ``zh`` when the line holds a CJK ideograph (the CJK Unified Ideographs and
  their extensions, the compatibility ideographs), else ``en``.

A prompt without quotes has no lines: the shot is silent on the speech track.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from kinema.errors import InvalidRequest

Language = Literal["en", "zh"]

MARKER = re.compile(r"<<<voice_(\d+)>>>")
_TOKEN = re.compile(r'<<<voice_(\d+)>>>|"([^"]*)"|“([^”]*)”|「([^」]*)」')
_IDEOGRAPH = re.compile(
    "[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ebef\U00030000-\U0003134f]"
)


@dataclass(frozen=True)
class Line:
    text: str
    speaker: int | None
    """1-based index into ``voice_ids``; None: the engine's own voice."""
    language: Language


def parse_script(prompt: str, voices: int, *, field: str = "prompt") -> list[Line]:
    """The dialogue lines of one shot's ``prompt`` by the rule in the module docstring, with
    ``voices`` voice ids given. Raises InvalidRequest naming ``field``."""
    lines: list[Line] = []
    pending: int | None = None
    for match in _TOKEN.finditer(prompt):
        marker, *quoted = match.groups()
        if marker is not None:
            pending = _speaker(marker, voices, field)
            continue
        text = next(part for part in quoted if part is not None)
        inner = MARKER.search(text)
        if inner:
            raise InvalidRequest(
                f"{field}: {inner.group(0)} is inside a quoted line; put the marker before "
                "the quote it speaks"
            )
        if text.strip():
            lines.append(Line(text.strip(), pending, language_of(text)))
        pending = None
    return lines


def language_of(text: str) -> Language:
    """``zh`` when ``text`` holds a CJK ideograph, else ``en``."""
    return "zh" if _IDEOGRAPH.search(text) else "en"


def _speaker(number: str, voices: int, field: str) -> int:
    n = int(number) if len(number) <= 6 else 0
    if not 1 <= n <= voices:
        given = f"only {voices} voice_ids are given" if voices else "no voice_ids are given"
        raise InvalidRequest(f"{field}: <<<voice_{number}>>> names voice {number}, but {given}")
    return n
