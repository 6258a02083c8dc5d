"""What the configured presets declare is the submit-time contract: a request they cannot
honour is a 400 naming the capability; audio an engine cannot make is not delivered, reported
and not charged (docs/api.md, "Capabilities at submit")."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from kinema.api.endpoints import ENDPOINTS
from kinema.engines.base import Task
from kinema.engines.presets import STATIC_IMAGE, TINY_LTX2
from kinema.errors import InvalidRequest
from kinema.jobs.spec import VideoSpec
from kinema.settings import BillingSettings

pytestmark = pytest.mark.unit

VIDEO = ENDPOINTS["kling-3-standard-image2video"]
SHORT_SILENT = dataclasses.replace(
    TINY_LTX2,
    name="short-silent",
    capabilities=dataclasses.replace(TINY_LTX2.capabilities, max_frames=73, audio=False),
)
PRESETS = {Task.IMAGE_TO_VIDEO: SHORT_SILENT, Task.IMAGE_TO_IMAGE: STATIC_IMAGE}


def _request(**body: Any) -> Any:
    return VIDEO.request_model.model_validate({"start_image_url": "x", "prompt": "p", **body})


def test_a_duration_the_engine_cannot_render_is_a_400_at_submit() -> None:
    with pytest.raises(InvalidRequest) as caught:
        VIDEO.check(_request(duration="5"), PRESETS)
    assert caught.value.message == (
        "duration: a 5 s shot (120 frames at 24 fps) is longer than the configured video engine "
        "(short-silent) renders in one generation (max_frames 73: 3 s at most)"
    )
    VIDEO.check(_request(duration="3"), PRESETS)  # 72 frames → 73 on the grid: fits


def test_each_shot_must_fit_not_the_whole_video() -> None:
    shots = [{"prompt": "a", "duration": "3"}, {"prompt": "b", "duration": "3"}]
    VIDEO.check(_request(duration="6", multi_prompt=shots, prompt=None), PRESETS)
    long_shot = [{"prompt": "a", "duration": "2"}, {"prompt": "b", "duration": "4"}]
    with pytest.raises(InvalidRequest, match=r"^multi_prompt: a 4 s shot"):
        VIDEO.check(_request(duration="6", multi_prompt=long_shot, prompt=None), PRESETS)


def test_audio_an_engine_cannot_make_is_neither_promised_nor_charged() -> None:
    billing = BillingSettings()
    silent = VIDEO.plan(_request(duration="3"), "j", PRESETS).spec
    assert isinstance(silent, VideoSpec)
    assert silent.generate_audio is False and silent.audio_requested is True
    speaking = {**PRESETS, Task.IMAGE_TO_VIDEO: TINY_LTX2}
    with_audio = VIDEO.plan(_request(duration="3"), "j", speaking).spec
    assert VIDEO.price(silent, billing) == 252_000  # 3 s × 0.084
    assert VIDEO.price(with_audio, billing) == 378_000  # 3 s × (0.084 + 0.042)


def test_without_a_speech_engine_the_configured_video_preset_refuses_voices(
    tmp_path: Any,
) -> None:
    from kinema.api.service import configured_presets
    from kinema.settings import Settings

    body = _request(prompt='<<<voice_1>>> says "hi"', voice_ids=["voice_a"])
    speaking = configured_presets(Settings(data_dir=tmp_path, engines={"preset": "tiny"}))
    assert speaking[Task.IMAGE_TO_VIDEO].capabilities.follows_audio
    VIDEO.check(body, speaking)
    quiet = configured_presets(
        Settings(data_dir=tmp_path, engines={"preset": "tiny", "speech_preset": "none"})
    )
    assert quiet[Task.IMAGE_TO_VIDEO].name == "tiny-ltx2"
    assert not quiet[Task.IMAGE_TO_VIDEO].capabilities.follows_audio
    with pytest.raises(InvalidRequest, match="voice_ids: voices are not supported"):
        VIDEO.check(body, quiet)
