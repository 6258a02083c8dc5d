"""The price table (settings.billing) applied to one request. Prices are in credits (1 credit =
1 USD in the hosted reference); internally integer micro-credits."""

from __future__ import annotations

from kinema.billing.keys import to_micros
from kinema.errors import InvalidRequest
from kinema.settings import BillingSettings


def video_price(billing: BillingSettings, *, duration_s: int, audio: bool, voice: bool) -> int:
    per_s = billing.video_price_per_s
    if audio:
        per_s += billing.video_audio_surcharge_per_s
    if voice:
        per_s += billing.video_voice_surcharge_per_s
    return to_micros(per_s * duration_s)


def image_price(billing: BillingSettings, *, resolution: str) -> int:
    try:
        return to_micros(billing.image_price[resolution])
    except KeyError:
        raise InvalidRequest(f"resolution: no price configured for {resolution!r}") from None
