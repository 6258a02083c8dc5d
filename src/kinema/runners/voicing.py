"""``voice_ids`` in the worker: each shot's script spoken in the voices' reference clips and
placed on the shot's timeline, the track the video then follows.

Per shot (:func:`shot_track`): the quoted lines of the shot's prompt with their speakers and
languages (:mod:`kinema.voices.script`), each spoken by the speech engine with its speaker's
reference clip (an unmarked line in the engine's own voice), then placed and mixed to the shot's
length at the video engine's audio rate (:mod:`kinema.voices.timeline`). The same job (seed,
prompts, clips) gives the same track.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from kinema.engines.base import AudioRate, ImageToVideoEngine, SpeechTrack
from kinema.engines.speech import Reference, VoiceEngine
from kinema.storage.blobs import Blobs, InputMissing
from kinema.voices.reference import decode_wav
from kinema.voices.script import MARKER, parse_script
from kinema.voices.timeline import ShotTrack, SpokenLine, max_speech_s, place_lines


class VoicingError(Exception):
    """A voice cannot be spoken as asked (its clip is gone, a line does not fit its shot)."""


class Voicing:
    """A run's voices: the speech engine, the reference clips, the rate the tracks are mixed
    at, and the lines placed so far (for ``x-output-metadata``)."""

    def __init__(self, speech: VoiceEngine, references: Sequence[Reference], out_rate: int) -> None:
        self.speech = speech
        self.references = tuple(references)
        self.out_rate = out_rate
        self.lines: list[dict[str, object]] = []

    def track(
        self,
        prompt: str,
        shot_s: float,
        *,
        start_s: float,
        seed: int,
        after_line: Callable[[], None] = lambda: None,
    ) -> SpeechTrack:
        """The speech track of a shot starting ``start_s`` into the video; its lines are
        recorded with their times in the video."""
        track = shot_track(
            self.speech,
            prompt,
            shot_s,
            self.references,
            self.out_rate,
            seed=seed,
            after_line=after_line,
        )
        for placed in track.lines:
            info = placed.info()
            info["start"] = round(start_s + placed.start_s, 3)
            info["end"] = round(start_s + placed.end_s, 3)
            self.lines.append(info)
        return SpeechTrack(track.audio, track.sample_rate)

    def facts(self) -> dict[str, object]:
        return {"voice_ids_honoured": True, "voice_lines": list(self.lines)}


def open_voicing(
    keys: Sequence[str],
    video: ImageToVideoEngine,
    speech: VoiceEngine | None,
    blobs: Blobs,
) -> Voicing | None:
    """The run's voices when it has any (``keys``: the reference clips' storage keys)."""
    if not keys:
        return None
    if not video.capabilities.follows_audio:
        raise VoicingError("voice_ids need a video engine that follows a speech track")
    if speech is None:
        raise VoicingError("voice_ids need a speech engine, and this worker loaded none")
    rate = video.sample_rate if isinstance(video, AudioRate) else speech.capabilities.sample_rate
    return Voicing(speech, load_references(blobs, keys), rate)


def load_references(blobs: Blobs, keys: Sequence[str]) -> tuple[Reference, ...]:
    """The voices' cleaned reference clips (``voices/<id>/reference.wav``), in voice order."""
    clips = []
    for index, key in enumerate(keys):
        try:
            with blobs.open(key) as stream:
                samples, rate = decode_wav(stream.read())
        except InputMissing:
            raise VoicingError(
                f"voice {index + 1}'s reference clip is no longer stored ({key}); create the "
                "voice again"
            ) from None
        clips.append(Reference(samples, rate))
    return tuple(clips)


def shot_track(
    speech: VoiceEngine,
    prompt: str,
    shot_s: float,
    references: Sequence[Reference],
    out_rate: int,
    *,
    seed: int,
    after_line: Callable[[], None] = lambda: None,
) -> ShotTrack:
    """The shot's speech track (silence when its prompt has no quoted line). ``after_line``
    is called after each line is spoken (a progress report, where a cancel is noticed)."""
    lines = parse_script(prompt, len(references))
    limit = max_speech_s(shot_s, len(lines))
    spoken = []
    for index, line in enumerate(lines):
        reference = None if line.speaker is None else references[line.speaker - 1]
        said = speech.speak(line.text, reference, line.language, limit, seed=(seed + index) % 2**32)
        spoken.append(SpokenLine(line, said.waveform, said.sample_rate))
        after_line()
    try:
        return place_lines(spoken, shot_s, out_rate)
    except ValueError as exc:  # timeline.DoesNotFit: the real speech is slower than estimated
        raise VoicingError(f"the dialogue does not fit the shot as spoken: {exc}") from exc


def spoken_prompt(prompt: str) -> str:
    """The prompt as the video model reads it: ``<<<voice_n>>>`` becomes ``speaker n``."""
    return MARKER.sub(lambda match: f"speaker {match.group(1)}", prompt)
