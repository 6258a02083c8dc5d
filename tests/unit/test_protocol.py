"""The worker protocol: every message round-trips through the one encoder/decoder, inputs
travel as base64, and a line that is not exactly a known message is refused."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from kinema.runners.protocol import (
    Cancel,
    Done,
    PhaseChanged,
    Progress,
    Run,
    RunResult,
    RunTask,
    decode_command,
    decode_event,
    encode,
)
from tests.fixtures.specs import image_spec, video_spec

pytestmark = pytest.mark.unit


def test_commands_round_trip_with_inline_inputs_as_base64() -> None:
    task = RunTask(
        job_id="j", spec=video_spec("j"), inline={"inputs/j/00-start_image": b"\x00\xff"}
    )
    line = encode(Run(task=task))
    assert line.endswith(b"\n") and b"AP8=" in line  # base64 of the bytes
    assert decode_command(line) == Run(task=task)
    assert decode_command(encode(Cancel(job_id="j"))) == Cancel(job_id="j")


def test_events_round_trip() -> None:
    result = RunResult(
        output_key="outputs/j/output.png",
        content_type="image/png",
        metadata={"width": 1024, "shot_info": [{"seed": 1}]},
        inference_time=0.5,
    )
    for event in (
        Progress(job_id="j", value=0.5),
        PhaseChanged(job_id="j", phase="encoding"),
        Done(job_id="j", result=result),
    ):
        assert decode_event(encode(event)) == event
    assert decode_event(encode(Done(job_id="j", result=result))).result.metadata["width"] == 1024


@pytest.mark.parametrize(
    "line",
    [
        b'{"event": "done", "job_id": "forged"}',  # a result is required
        b'{"event": "progress", "job_id": "j", "value": 2}',  # progress is 0..1
        b'{"event": "unknown"}',
        b"not json",
        b'{"event": "phase", "job_id": "j", "phase": "dreaming"}',
    ],
)
def test_anything_but_a_known_message_is_refused(line: bytes) -> None:
    with pytest.raises(ValidationError):
        decode_event(line)


def test_a_stored_spec_of_either_task_is_read_back_by_its_tag() -> None:
    from kinema.jobs.spec import dump_spec, load_spec

    for spec in (video_spec("a"), image_spec("b")):
        assert load_spec(dump_spec(spec)) == spec


def test_parameters_stored_before_the_spec_are_read_as_v1() -> None:
    from kinema.jobs.spec import VideoSpec, load_spec

    old = {
        "prompt": "a kite, then a bird",
        "negative_prompt": "",
        "aspect_ratio": "16:9",
        "width": 1920,
        "height": 1080,
        "fps": 24,
        "duration_s": 5,
        "num_frames": 120,
        "cfg_scale": 0.5,
        "generate_audio": True,
        "shot_type": "intelligence",
        "shots": [],
        "elements": 1,
        "seed": None,
    }
    inputs = {"start_image": "inputs/o/00-start_image", "element1_frontal": "inputs/o/01-e"}
    spec = load_spec(old, inputs)
    assert isinstance(spec, VideoSpec) and spec.preset is None
    assert len(spec.shots) == 2 and sum(s.duration_s for s in spec.shots) == 5
    assert spec.elements[0].frontal == "inputs/o/01-e"
    assert spec.input_keys() == ["inputs/o/00-start_image", "inputs/o/01-e"]
