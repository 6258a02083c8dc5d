"""What logs may show: of a URL, the query's names, never its values (a signed download link's
query is its credential; a webhook URL may carry the receiver's); of an API key, nothing."""

from __future__ import annotations

import re
import urllib.parse

from kinema.billing.keys import KEY_PREFIX

REDACTED = "[redacted]"


def redact_query(url: str) -> str:
    """``url`` with its query's values replaced by :data:`REDACTED`, names kept: a signed
    download link is a bearer token in its query, and a webhook URL may carry the receiver's."""
    parts = urllib.parse.urlsplit(url)
    if not parts.query:
        return url
    return parts._replace(query=redact_values(parts.query), fragment="").geturl()


def redact_values(query: str) -> str:
    names = (pair.partition("=")[0] for pair in query.split("&") if pair)
    return "&".join(f"{name}={REDACTED}" for name in names)


KEY = re.compile(rf"{KEY_PREFIX}[A-Za-z0-9_-]{{8,}}")
"""An API key (``kin_`` and its url-safe characters) anywhere in a text."""


def redact_keys(text: str) -> str:
    """``text`` with every API key in it replaced by ``kin_[redacted]`` (log lines: a key must
    never reach them, even quoted in an error message)."""
    return KEY.sub(KEY_PREFIX + REDACTED, text) if KEY_PREFIX in text else text
