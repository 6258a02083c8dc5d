"""``kinema.client.webhooks.verify`` accepts what the server signs (and what the Standard
Webhooks reference library signs), and refuses a wrong secret, a changed body, a stale stamp."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime

import pytest
import standardwebhooks

from kinema.client import WebhookVerificationError
from kinema.client.webhooks import verify
from kinema.jobs.webhooks import secret_for, sign

pytestmark = pytest.mark.unit
RAW_KEY = secret_for(b"server-secret", "key_1")
SECRET = "whsec_" + base64.b64encode(RAW_KEY).decode()
BODY = json.dumps({"type": "request.completed", "data": {"request_id": "r1"}}).encode()


def _signed(body: bytes = BODY, stamp: int | None = None) -> dict[str, str]:
    stamp = int(time.time()) if stamp is None else stamp
    return {
        "webhook-id": "msg_r1",
        "webhook-timestamp": str(stamp),
        "webhook-signature": sign(RAW_KEY, "msg_r1", stamp, body),
    }


def test_what_the_server_signs_verifies() -> None:
    assert verify(_signed(), BODY, SECRET)["data"]["request_id"] == "r1"
    assert verify(_signed(), BODY.decode(), RAW_KEY)["type"] == "request.completed"
    headers = {k.title(): v for k, v in _signed().items()}  # any header case
    assert verify(headers, BODY, SECRET)["data"] == {"request_id": "r1"}


def test_what_the_reference_library_signs_verifies() -> None:
    now = datetime.now(tz=UTC)
    signature = standardwebhooks.Webhook(SECRET).sign("msg_x", now, BODY.decode())
    headers = {
        "webhook-id": "msg_x",
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": "v1,bogus " + signature,  # several signatures: any may match
    }
    assert verify(headers, BODY, SECRET)["type"] == "request.completed"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"secret": "whsec_" + base64.b64encode(b"other").decode()}, "no webhook-signature"),
        ({"body": BODY + b" "}, "no webhook-signature"),
        ({"stamp": int(time.time()) - 3600}, "too old"),
        ({"drop": "webhook-id"}, "missing webhook-id"),
        ({"secret": "whsec_***"}, "not whsec_"),
    ],
)
def test_a_forged_or_stale_delivery_is_refused(change: dict[str, object], message: str) -> None:
    stamp = change.get("stamp")
    headers = _signed(stamp=stamp if isinstance(stamp, int) else None)
    headers.pop(str(change.get("drop", "")), None)
    body = change.get("body", BODY)
    secret = change.get("secret", SECRET)
    assert isinstance(body, bytes) and isinstance(secret, str)
    with pytest.raises(WebhookVerificationError, match=message):
        verify(headers, body, secret)
