"""What logs may show of a URL: the query's names, never its values (a signed download link's
query is its credential; a webhook URL may carry the receiver's)."""

from __future__ import annotations

import urllib.parse

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
