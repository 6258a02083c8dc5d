"""Voice samples for ``voice_ids``: stored per key, validated by decoding them, each with the
cleaned reference clip a speech engine clones the voice from (:mod:`kinema.voices.reference`)."""

from __future__ import annotations

import asyncio
import time
import uuid

from kinema.errors import InvalidInput, InvalidRequest
from kinema.media.audio import decode_mono, probe_audio
from kinema.storage.base import Storage
from kinema.store.db import Database
from kinema.voices import reference
from kinema.voices import repository as repo
from kinema.voices.repository import Voice

MIN_S, MAX_S = 5.0, 30.0


class VoiceService:
    def __init__(self, db: Database, storage: Storage) -> None:
        self._db = db
        self._storage = storage

    async def create(self, key_id: str, sample: bytes, name: str | None) -> Voice:
        """Verify the sample (mp3/wav/mp4/mov with 5–30 s of audio) and keep it for the key, with
        its cleaned reference clip beside it (``voices/<id>/reference.wav``)."""
        # On a thread, and no further than MAX_S: decoding a whole file of hours stopped
        # every other request for seconds.
        info = await asyncio.to_thread(probe_audio, sample, field="voice_url", max_s=MAX_S)
        if info.longer or not MIN_S <= info.duration_s <= MAX_S:
            got = f"more than {MAX_S:g} s" if info.longer else f"{info.duration_s:.1f} s"
            raise InvalidInput(
                f"voice_url: the sample must last {MIN_S:g}-{MAX_S:g} s of one clean speaker "
                f"(got {got})"
            )
        clip = await asyncio.to_thread(_reference_wav, sample)
        voice_id = "voice_" + uuid.uuid4().hex
        voice = Voice(
            id=voice_id,
            key_id=key_id,
            name=name or "",
            sample_key=f"voices/{voice_id}/sample.{info.container}",
            container=info.container,
            duration_s=info.duration_s,
            created_at=time.time(),
        )
        await self._storage.put_bytes(voice.sample_key, sample, "application/octet-stream")
        try:
            await self._storage.put_bytes(reference.reference_key(voice_id), clip, "audio/wav")
            await self._db.write(lambda conn: repo.insert_voice(conn, voice))
        except BaseException:
            await self._storage.delete_prefix(f"voices/{voice_id}")
            raise
        return voice

    async def require(self, key_id: str, ids: list[str]) -> None:
        """400 naming the first voice id that does not exist for this key (another key's
        voices do not exist for it), or whose reference clip is not stored."""
        found = await self._db.read(lambda conn: repo.owned(conn, key_id, ids))
        for index, voice_id in enumerate(ids):
            if voice_id not in found:
                raise InvalidRequest(
                    f"voice_ids[{index}]: voice {voice_id!r} not found (create it with "
                    "kling-create-voice using this API key)"
                )
        for index, voice_id in enumerate(ids):
            # Voices made before create-voice kept a reference clip cannot be spoken: a 400 now
            # rather than a failed run later.
            if not await self._storage.exists(reference.reference_key(voice_id)):
                raise InvalidRequest(
                    f"voice_ids[{index}]: voice {voice_id!r} has no reference clip (it was "
                    "created before Kinema kept one); create it again with kling-create-voice"
                )


def _reference_wav(sample: bytes) -> bytes:
    """The cleaned reference clip of a verified sample, as WAV (CPU work: run on a thread)."""
    rate = reference.REFERENCE_RATE
    samples = decode_mono(sample, rate=rate, field="voice_url", max_s=MAX_S)
    try:
        clip = reference.clean_reference(samples, rate)
    except reference.NoSpeech as exc:
        raise InvalidInput(f"voice_url: {exc}; give 5-30 s of one clean speaker") from exc
    return reference.encode_wav(clip.samples, clip.sample_rate)
