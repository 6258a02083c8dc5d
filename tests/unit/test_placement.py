"""Placement of worker pools on GPUs, from fake device inventories: what fits where, and the
refusal that names the device, the presets and the numbers when it does not."""

from __future__ import annotations

import pytest

from kinema.runners.placement import Device, PlacementError, plan
from kinema.settings import EngineSettings

pytestmark = pytest.mark.unit

PRODUCTION = {"preset": "production"}  # ltx2.5-distilled (72 GiB) + flux2-klein-4b (16 GiB)


def gpus(*gib: float) -> list[Device]:
    return [Device(i, g) for i, g in enumerate(gib)]


def test_short_form_is_one_pool_per_task_and_the_video_worker_loads_its_composer() -> None:
    pools = plan(EngineSettings(**PRODUCTION), gpus(141))
    assert [(p.name, p.loads, p.workers) for p in pools] == [
        ("image-to-video", ("ltx2.5-distilled", "flux2-klein-4b"), ((0,),)),
        ("image-to-image", ("flux2-klein-4b",), ((0,),)),
    ]


def test_one_80_gib_card_is_refused_with_the_numbers() -> None:
    with pytest.raises(PlacementError) as caught:
        plan(EngineSettings(**PRODUCTION), gpus(80))
    message = str(caught.value)
    assert message.startswith("GPU 0 (80 GiB) cannot hold ltx2.5-distilled worker 0")
    # The video worker loads the speech engine for voice_ids too (voxcpm2, 8 GiB).
    assert "ltx2.5-distilled + flux2-klein-4b + voxcpm2" in message
    assert "about 112 GiB" in message
    assert "engines.cpu_offload = true" in message


def test_one_80_gib_card_fits_with_cpu_offload() -> None:
    pools = plan(EngineSettings(**PRODUCTION, cpu_offload=True), gpus(80), cpu_offload=True)
    assert [p.workers for p in pools] == [((0,),), ((0,),)]


def test_eight_80_gib_cards_take_one_worker_each_where_the_pools_say() -> None:
    settings = EngineSettings(
        pools=[
            {"preset": "ltx2.5-distilled", "workers": 6, "devices": [0, 1, 2, 3, 4, 5]},
            {"preset": "flux2-klein-4b", "workers": 2, "devices": [6, 7]},
        ],
        cpu_offload=True,
    )
    video, image = plan(settings, gpus(*[80] * 8), cpu_offload=True)
    assert video.workers == tuple((n,) for n in range(6))
    assert image.workers == ((6,), (7,))
    assert video.loads == ("ltx2.5-distilled", "flux2-klein-4b")


def test_automatic_placement_spreads_workers_over_the_emptiest_cards() -> None:
    settings = EngineSettings(pools=[{"preset": "flux2-klein-4b", "workers": 3}], preset="static")
    # Only an image pool: the video task's preset is missing, which is fine for placement.
    (image,) = plan(settings, gpus(80, 80))
    assert image.workers == ((0,), (1,), (0,))


def test_pinned_devices_must_exist_and_suffice() -> None:
    missing = EngineSettings(pools=[{"preset": "flux2-klein-4b", "devices": [3]}])
    with pytest.raises(PlacementError, match="device 3 does not exist"):
        plan(missing, gpus(80))
    short = EngineSettings(pools=[{"preset": "flux2-klein-4b", "workers": 2, "devices": [0]}])
    with pytest.raises(PlacementError, match="2 workers × 1 GPU"):
        plan(short, gpus(80, 80))


def test_two_pools_for_one_task_and_a_missing_composer_are_refused() -> None:
    twice = EngineSettings(pools=[{"preset": "flux2-klein-4b"}, {"preset": "qwen-image-edit"}])
    with pytest.raises(PlacementError, match="two pools serve image-to-image"):
        plan(twice, gpus(141))
    alone = EngineSettings(pools=[{"preset": "ltx2.5-distilled"}])
    with pytest.raises(PlacementError, match="needs an engine for image-to-image"):
        plan(alone, gpus(141))


def test_without_gpus_nothing_is_placed_or_checked() -> None:
    pools = plan(EngineSettings(**PRODUCTION), [])
    assert [p.workers for p in pools] == [(None,), (None,)]


def test_cpu_presets_get_no_gpu() -> None:
    pools = plan(EngineSettings(preset="static"), gpus(80))
    assert [p.workers for p in pools] == [((),), ((),)]


def test_a_third_party_video_preset_that_takes_no_references_loads_the_composer() -> None:
    """``needs`` left unset is derived from the capabilities, so elements keep working for a
    plugin preset that does not declare it."""
    from kinema.engines.base import Capabilities, Task
    from kinema.engines.registry import Preset, register

    register(
        Preset(
            name="test-plugin-video",
            capabilities=Capabilities(task=Task.IMAGE_TO_VIDEO),
            loader="nowhere:load",
        )
    )
    settings = EngineSettings(preset="custom", video_preset="test-plugin-video")
    video, _ = plan(settings, [])
    assert video.loads == ("test-plugin-video", "tiny-flux2-klein")


@pytest.mark.parametrize(
    ("settings", "speech"),
    [
        pytest.param({"preset": "tiny"}, "tiny-vibevoice", id="tiny"),
        pytest.param(PRODUCTION, "voxcpm2", id="production"),
        pytest.param({"preset": "tiny", "speech_preset": "voxcpm2"}, "voxcpm2", id="configured"),
        pytest.param({"preset": "static"}, None, id="static video follows no audio"),
        pytest.param({**PRODUCTION, "speech_preset": "none"}, None, id="none"),
    ],
)
def test_a_video_worker_that_follows_audio_loads_a_speech_engine(
    settings: dict[str, str], speech: str | None
) -> None:
    video, image = plan(EngineSettings(**settings), [])
    assert (video.name, video.speech) == ("image-to-video", speech)
    assert image.speech is None
