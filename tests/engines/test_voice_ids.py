"""voice_ids end to end on the tiny presets (issue 14's "done means"): two voices created as
create-voice makes them (a cleaned reference clip in the storage), a request whose prompt gives
each a line, planned and checked by the endpoint, run by the worker's execute with the tiny
VibeVoice speaking and the tiny LTX-2 following the speech frozen. The MP4's audio holds the lines
at the times x-output-metadata reports; another reference clip for a voice (same seed) gives
another audio track and other frames."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import av
import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from kinema.api.endpoints import ENDPOINTS
from kinema.billing.pricing import video_price
from kinema.engines.base import Task
from kinema.engines.presets import STATIC_VIDEO, TINY_FLUX2_KLEIN, TINY_LTX2
from kinema.engines.registry import LoadOptions
from kinema.engines.speech import VoiceEngine, load_voice_engine
from kinema.errors import InvalidRequest
from kinema.media.audio import decode_mono
from kinema.runners.execute import ExecutionError, execute
from kinema.runners.protocol import RunResult, RunTask
from kinema.settings import BillingSettings
from kinema.storage.blobs import LocalBlobs
from kinema.voices.reference import REFERENCE_RATE, clean_reference, encode_wav, reference_key

if TYPE_CHECKING:
    from kinema.engines.ltx2 import LTX2Engine

pytestmark = pytest.mark.engines
VIDEO = "kling-3-standard-image2video"
PRESETS = {Task.IMAGE_TO_VIDEO: TINY_LTX2, Task.IMAGE_TO_IMAGE: TINY_FLUX2_KLEIN}
PROMPT = (
    'Two friends at a table. <<<voice_1>>> says "Are you coming with us tonight?" and '
    '<<<voice_2>>> answers "Yes, of course."'
)
BODY = {"prompt": PROMPT, "duration": "5", "aspect_ratio": "1:1", "seed": 11}
Wave = npt.NDArray[np.float32]


def voice_sample(hz: float, seconds: float = 6.0) -> Wave:
    """A speech-like sample: a harmonic tone in syllables of 0.2 s with short pauses."""
    t = np.arange(round(seconds * REFERENCE_RATE)) / REFERENCE_RATE
    tone = sum(np.sin(2 * np.pi * hz * k * t) / k for k in (1, 2, 3))
    syllables = (np.sin(2 * np.pi * 2.5 * t) > -0.6).astype(np.float32)
    return (0.2 * tone * syllables).astype(np.float32)


def create_voice(blobs: LocalBlobs, voice_id: str, hz: float) -> None:
    """What create-voice stores for a sample: its cleaned reference clip."""
    clip = clean_reference(voice_sample(hz), REFERENCE_RATE)
    blobs.put_bytes(reference_key(voice_id), encode_wav(clip.samples, clip.sample_rate))


@pytest.fixture(scope="module")
def speech(load_options: LoadOptions) -> VoiceEngine:
    return load_voice_engine("tiny-vibevoice", load_options)


def run(
    engine: LTX2Engine, speech: VoiceEngine | None, out: Path, voices: dict[str, float]
) -> RunResult:
    """The request with ``voices`` (id → the pitch of its sample), planned and run."""
    endpoint = ENDPOINTS[VIDEO]
    body = {"start_image_url": "stored", **BODY, "voice_ids": list(voices)}
    request = endpoint.request_model.model_validate(body)
    endpoint.check(request, PRESETS)
    plan = endpoint.plan(request, out.name, PRESETS)
    blobs = LocalBlobs(out)
    for voice_id, hz in voices.items():
        create_voice(blobs, voice_id, hz)
    Image.new("RGB", (96, 96), (120, 60, 30)).save(out / "start.png")
    blobs.put_bytes(plan.media[0].key, (out / "start.png").read_bytes())
    task = RunTask(job_id=out.name, spec=plan.spec)
    engines = {Task.IMAGE_TO_VIDEO: engine}
    return execute(engines, task, blobs, lambda _p, _w: None, speech=speech)


def mp4_audio(out: Path, result: RunResult, rate: int = 16_000) -> Wave:
    return decode_mono((out / result.output_key).read_bytes(), rate=rate, field="output")


def mp4_frames(out: Path, result: RunResult) -> npt.NDArray[np.uint8]:
    with av.open(str(out / result.output_key)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def rms(samples: Wave) -> float:
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))) if len(samples) else 0.0


@pytest.fixture(scope="module")
def first(
    ltx2_engine: LTX2Engine, speech: VoiceEngine, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, RunResult]:
    out = tmp_path_factory.mktemp("voices-a")
    return out, run(ltx2_engine, speech, out, {"voice_a": 140.0, "voice_b": 260.0})


def test_the_lines_are_reported_with_speaker_language_and_times(
    first: tuple[Path, RunResult],
) -> None:
    _, result = first
    meta = result.metadata
    assert meta["voice_ids_honoured"] is True and meta["has_audio"] is True
    assert meta["audio_driven"] is True
    lines = meta["voice_lines"]
    assert isinstance(lines, list) and len(lines) == 2
    assert [(line["speaker"], line["language"]) for line in lines] == [(1, "en"), (2, "en")]
    assert lines[0]["start"] == pytest.approx(0.3)  # the timeline's lead-in
    assert lines[0]["end"] < lines[1]["start"] < lines[1]["end"] <= 5.0 - 0.2


def test_the_mp4_holds_the_lines_at_the_reported_times(first: tuple[Path, RunResult]) -> None:
    out, result = first
    rate = 16_000
    audio = mp4_audio(out, result, rate)
    assert len(audio) == pytest.approx(5 * rate, abs=rate * 0.05)
    lines = result.metadata["voice_lines"]
    assert isinstance(lines, list)

    def part(start: float, end: float) -> Wave:
        return audio[round(start * rate) : round(end * rate)]

    margin = 0.05  # AAC's frame and the cut fades blur the edges a little
    spoken = [rms(part(line["start"] + margin, line["end"] - margin)) for line in lines]
    quiet = [
        rms(part(0.0, lines[0]["start"] - margin)),
        rms(part(lines[0]["end"] + margin, lines[1]["start"] - margin)),
        rms(part(lines[1]["end"] + margin, 5.0)),
    ]
    assert min(spoken) > 0.005
    assert max(quiet) < min(spoken) / 20


def test_another_reference_clip_gives_other_audio_and_other_frames(
    first: tuple[Path, RunResult],
    ltx2_engine: LTX2Engine,
    speech: VoiceEngine,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    out_a, a = first
    out_b = tmp_path_factory.mktemp("voices-b")
    b = run(ltx2_engine, speech, out_b, {"voice_a": 190.0, "voice_b": 260.0})  # voice 1 other
    out_c = tmp_path_factory.mktemp("voices-c")
    c = run(ltx2_engine, speech, out_c, {"voice_a": 140.0, "voice_b": 260.0})  # as the first

    assert b.metadata["seed"] == a.metadata["seed"] == 11
    assert not np.array_equal(mp4_audio(out_a, a), mp4_audio(out_b, b))
    assert not np.array_equal(mp4_frames(out_a, a), mp4_frames(out_b, b))
    # The same clips and seed: the same speech track (and, held at the engine in
    # test_ltx2_speech.py, the same frames; the MP4 encode of identical frames was once seen to
    # differ between two runs in one session, so the decoded frames are not compared here).
    assert np.array_equal(mp4_audio(out_a, a), mp4_audio(out_c, c))
    assert a.metadata["voice_lines"] == c.metadata["voice_lines"]


def test_without_a_speech_engine_the_run_fails_clearly(
    ltx2_engine: LTX2Engine, tmp_path: Path
) -> None:
    with pytest.raises(ExecutionError, match="speech engine"):
        run(ltx2_engine, None, tmp_path, {"voice_a": 140.0, "voice_b": 260.0})


def test_the_voice_surcharge_is_in_the_price_only_with_voices() -> None:
    endpoint, billing = ENDPOINTS[VIDEO], BillingSettings()
    with_voices = endpoint.request_model.model_validate(
        {"start_image_url": "stored", **BODY, "voice_ids": ["voice_a", "voice_b"]}
    )
    unvoiced = {**BODY, "prompt": "Two friends at a table."}
    without = endpoint.request_model.model_validate({"start_image_url": "stored", **unvoiced})
    priced = [
        endpoint.price(endpoint.plan(r, "j", PRESETS).spec, billing) for r in (with_voices, without)
    ]
    assert priced == [
        video_price(billing, duration_s=5, audio=True, voice=True),
        video_price(billing, duration_s=5, audio=True, voice=False),
    ]
    assert priced[0] > priced[1]


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        pytest.param(
            {"prompt": '<<<voice_1>>> says "' + "word " * 40 + '"', "duration": "3"},
            "prompt: the dialogue does not fit the shot",
            id="too long for its shot",
        ),
        pytest.param(
            {
                "multi_prompt": [
                    {"prompt": '<<<voice_1>>> "Hi there."', "duration": "2"},
                    {"prompt": '"' + "word " * 20 + '"', "duration": "3"},
                ],
                "duration": "5",
                "shot_type": "customize",
            },
            "multi_prompt[1].prompt: the dialogue does not fit the shot",
            id="a shot of several",
        ),
    ],
)
def test_a_line_that_cannot_fit_its_shot_is_a_400_at_submit(
    body: dict[str, object], needle: str
) -> None:
    endpoint = ENDPOINTS[VIDEO]
    request = endpoint.request_model.model_validate(
        {"start_image_url": "stored", "voice_ids": ["voice_a"], **body}
    )
    with pytest.raises(InvalidRequest) as caught:
        endpoint.check(request, PRESETS)
    assert needle in caught.value.message and "25% faster" in caught.value.message


def test_a_preset_that_cannot_follow_audio_still_refuses_voices() -> None:
    endpoint = ENDPOINTS[VIDEO]
    request = endpoint.request_model.model_validate(
        {"start_image_url": "stored", "voice_ids": ["voice_a"], "prompt": '<<<voice_1>>> "Hi"'}
    )
    presets = {**PRESETS, Task.IMAGE_TO_VIDEO: STATIC_VIDEO}
    with pytest.raises(InvalidRequest, match="voice_ids: voices are not supported"):
        endpoint.check(request, presets)


def test_missing_speech_weights_stop_the_worker_with_the_download_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kinema.engines.weights import WeightsMissing
    from kinema.runners.worker import load_speech
    from tests.conftest import worker_config

    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    config = worker_config(["tiny-ltx2"], tmp_path, speech_preset="voxcpm2")
    with pytest.raises(WeightsMissing, match="hf download openbmb/VoxCPM2"):
        load_speech(config)
    assert load_speech(worker_config(["tiny-ltx2"], tmp_path)) is None


def test_intelligence_keeps_each_line_of_dialogue_in_one_shot() -> None:
    endpoint = ENDPOINTS[VIDEO]
    request = endpoint.request_model.model_validate(
        {
            "start_image_url": "stored",
            "voice_ids": ["voice_a", "voice_b"],
            "shot_type": "intelligence",
            "duration": "8",
            "prompt": (
                'A kitchen. <<<voice_1>>> says "Hello there. How are you?" Then they sit. '
                '<<<voice_2>>> answers "Fine."'
            ),
        }
    )
    endpoint.check(request, PRESETS)  # no line cut in two, no marker caught inside a quote
    shots = endpoint.plan(request, "j", PRESETS).spec.shots
    assert [s.script for s in shots] == [
        "A kitchen.",
        '<<<voice_1>>> says "Hello there. How are you?" Then they sit.',
        '<<<voice_2>>> answers "Fine."',
    ]
