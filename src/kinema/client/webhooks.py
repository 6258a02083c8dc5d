"""Check a webhook delivery from Kinema (Standard Webhooks signing, as the server does it in
``kinema.jobs.webhooks``): ``webhook-signature`` holds one or more ``v1,<base64 HMAC-SHA256>``
of ``<webhook-id>.<webhook-timestamp>.<raw body>``, keyed by the base64-decoded part of the
key's secret after ``whsec_``. Written here (not imported from the server) so that a receiver
needs only this SDK."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

from kinema.client.errors import WebhookVerificationError

__all__ = ["TOLERANCE_S", "verify"]

TOLERANCE_S = 300
"""A delivery stamped further than this from now (either way) is refused: a replay guard."""


def _header(headers: Mapping[str, str], name: str) -> str:
    # HTTP header names are case-insensitive; a plain dict from a framework may keep any case.
    for key, value in headers.items():
        if key.lower() == name:
            return value
    raise WebhookVerificationError(f"missing {name} header")


def _key(secret: str | bytes) -> bytes:
    if isinstance(secret, bytes):
        return secret
    try:
        return base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except binascii.Error as exc:
        raise WebhookVerificationError("the secret is not whsec_<base64>") from exc


def verify(
    headers: Mapping[str, str],
    body: bytes | str,
    secret: str | bytes,
    *,
    tolerance_s: float = TOLERANCE_S,
    now: float | None = None,
) -> dict[str, Any]:
    """The delivery's JSON payload once its signature and timestamp check out.

    ``secret`` is the key's ``whsec_…`` (``Client.webhook_secret()``) or the raw key bytes;
    ``body`` the raw request body, exactly as received. Raises :class:`WebhookVerificationError`.
    """
    raw = body.encode() if isinstance(body, str) else body
    message_id = _header(headers, "webhook-id")
    stamp = _header(headers, "webhook-timestamp")
    signatures = _header(headers, "webhook-signature")
    try:
        sent_at = int(stamp)
    except ValueError as exc:
        raise WebhookVerificationError(f"webhook-timestamp is not a number: {stamp!r}") from exc
    if abs((time.time() if now is None else now) - sent_at) > tolerance_s:
        raise WebhookVerificationError("webhook-timestamp is too old or too new")
    signed = f"{message_id}.{stamp}.".encode() + raw
    expected = base64.b64encode(hmac.new(_key(secret), signed, hashlib.sha256).digest())
    for candidate in signatures.split():
        version, _, value = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(value.encode(), expected):
            payload: dict[str, Any] = json.loads(raw)
            return payload
    raise WebhookVerificationError("no webhook-signature matches the secret")
