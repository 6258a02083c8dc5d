"""Shot planning: how a video request becomes one generation per shot.

``shot_type: customize`` takes the shots from ``multi_prompt`` as given. ``shot_type:
intelligence`` splits the single ``prompt`` by rule, in this order:

1. explicit cues — ``Shot 1: … Shot 2: …``, ``[cut]`` or ``cut to:`` (any case) — split there;
2. otherwise sentences (``.``, ``!``, ``?`` followed by a space) and ``, then`` / ``; then`` /
   `` and then`` turns of phrase;
   never inside a quoted line (``"…"``, ``“…”``, ``「…」``, paired as the script rule of
   :mod:`kinema.voices.script` pairs them): a line of dialogue stays in one shot, whole;
3. at most 5 shots (the contract's limit; extra pieces join the last shot) and at most one shot
   per second of video;
4. every second goes to some shot: each gets at least 1 s and the rest is shared in proportion to
   the length of its text (largest remainders first), so the total is exactly the duration.

A prompt with a single piece stays one shot. Pure functions, no model code.
"""

from __future__ import annotations

import re

MAX_SHOTS = 5
_CUES = re.compile(r"(?:\bshot\s*\d+\s*[:.)-]|\[cut\]|\bcut to\s*:)", re.IGNORECASE)
_SENTENCES = re.compile(r"(?<=[.!?])\s+|[,;]\s*then\s+|\s+and then\s+", re.IGNORECASE)
_QUOTED = re.compile(r'"[^"]*"|“[^”]*”|「[^」]*」')


def split_prompt(prompt: str, duration_s: int) -> list[tuple[str, int]]:
    """(prompt, seconds) per shot for ``shot_type: intelligence``; seconds add up to
    ``duration_s``."""
    pieces = _pieces(prompt)
    limit = max(1, min(MAX_SHOTS, duration_s))
    if len(pieces) > limit:
        pieces = [*pieces[: limit - 1], " ".join(pieces[limit - 1 :])]
    return list(zip(pieces, _share(duration_s, [len(p) for p in pieces]), strict=True))


def _pieces(prompt: str) -> list[str]:
    text = prompt.strip()
    quoted = [match.span() for match in _QUOTED.finditer(text)]
    cuts = _cuts(_CUES, text, quoted) or _cuts(_SENTENCES, text, quoted)
    bounds = [0, *(edge for cut in cuts for edge in cut), len(text)]
    parts = [text[bounds[i] : bounds[i + 1]] for i in range(0, len(bounds), 2)]
    pieces = [part.strip(" \t\n,;") for part in parts]
    return [piece for piece in pieces if piece] or [text]


def _cuts(
    pattern: re.Pattern[str], text: str, quoted: list[tuple[int, int]]
) -> list[tuple[int, int]]:
    """Where ``pattern`` splits ``text``, outside the quoted spans."""
    return [
        match.span()
        for match in pattern.finditer(text)
        if not any(start < match.start() < end for start, end in quoted)
    ]


def _share(total: int, weights: list[int]) -> list[int]:
    """Integer seconds ≥ 1 each, summing to ``total``, in proportion to ``weights``."""
    count = len(weights)
    spare = total - count
    weight_sum = sum(weights) or count
    exact = [spare * (w or 1) / weight_sum for w in weights]
    seconds = [1 + int(x) for x in exact]
    by_remainder = sorted(range(count), key=lambda i: exact[i] - int(exact[i]), reverse=True)
    for i in by_remainder[: total - sum(seconds)]:
        seconds[i] += 1
    return seconds


_ELEMENT = re.compile(r"@Element(\d+)")


def reference_prompt(prompt: str, reference_counts: list[int]) -> str:
    """Rewrite ``@ElementN`` for a multi-reference image model: the source is image 1, then each
    element's frontal image and its references in order, so element N's frontal image is at
    position ``2 + sum(1 + refs of the elements before it)``."""
    positions = [2 + sum(1 + c for c in reference_counts[:n]) for n in range(len(reference_counts))]

    def image_of(match: re.Match[str]) -> str:
        n = int(match.group(1))
        return f"the subject of image {positions[n - 1]}" if 1 <= n <= len(positions) else match[0]

    return _ELEMENT.sub(image_of, prompt)


_IMAGE_REFERENCE = re.compile(r"\bthe subject of image (\d+)\b")


def picture_prompt(prompt: str) -> str:
    """Name the images of :func:`reference_prompt` the way Qwen-Image-Edit-Plus introduces them
    to its text encoder ("Picture 1: …, Picture 2: …"): "the subject of Picture K"."""
    return _IMAGE_REFERENCE.sub(r"the subject of Picture \1", prompt)


def video_prompt(prompt: str) -> str:
    """A video model has not seen the element images (they are composed into the first frame),
    so ``@ElementN`` becomes plain words it can read."""
    return _ELEMENT.sub(lambda m: f"subject {m.group(1)}", prompt)
