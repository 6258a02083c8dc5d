"""cfg_scale and negative_prompt reach the pipeline with their meaning: the guidance table, and
the tiny LTX-2 with full-model settings (same weights as tiny-ltx2, so outputs compare)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pytest
from PIL import Image

from kinema.engines.base import VideoJob
from kinema.engines.guidance import GUIDANCE, GuidanceMap
from kinema.engines.registry import LoadOptions, load_engine

if TYPE_CHECKING:
    from kinema.engines.ltx2 import LTX2Engine

pytestmark = pytest.mark.engines


def test_guidance_table_maps_the_contract_range() -> None:
    ltx = GUIDANCE["ltx2"]
    assert ltx.scale(0) == 1.0 and ltx.scale(0.5) == 3.0 and ltx.scale(1) == 7.0
    assert ltx.scale(0.25) == pytest.approx(2.0) and ltx.scale(0.75) == pytest.approx(5.0)
    assert GuidanceMap().scale(-1) == 1.0 and GuidanceMap().scale(2) == 7.0


@pytest.fixture(scope="module")
def quality(load_options: LoadOptions) -> LTX2Engine:
    from kinema.engines.ltx2 import LTX2Engine

    engine = load_engine("tiny-ltx2-quality", load_options)
    assert isinstance(engine, LTX2Engine) and engine.capabilities.honours_cfg
    return engine


def _render(engine: LTX2Engine, cfg: float, negative: str = "blur") -> tuple[np.ndarray, dict]:
    job = VideoJob(
        prompt="a red kite",
        negative_prompt=negative,
        start_image=Image.new("RGB", (128, 72), (200, 30, 30)),
        width=1920,
        height=1080,
        num_frames=9,
        fps=24,
        cfg_scale=cfg,
        generate_audio=False,
        seed=11,
    )
    out = engine.generate(job, lambda _p: None)
    return out.frames.array(), dict(out.info)


def test_cfg_zero_is_guidance_off_like_the_distilled_preset(
    quality: LTX2Engine, ltx2_engine: LTX2Engine
) -> None:
    off, info = _render(quality, 0.0)
    distilled, distilled_info = _render(ltx2_engine, 0.7)  # distilled ignores cfg_scale
    assert info["guidance_scale"] == 1.0 and distilled_info["guidance_scale"] == 1.0
    assert np.array_equal(off, distilled)
    assert np.array_equal(off, _render(quality, 0.0, negative="something else")[0])


def test_cfg_and_negative_prompt_change_the_output(quality: LTX2Engine) -> None:
    low, _ = _render(quality, 0.0)
    mid, info = _render(quality, 0.5)
    high, _ = _render(quality, 1.0)
    assert info["guidance_scale"] == 3.0
    assert not np.array_equal(low, mid) and not np.array_equal(mid, high)
    assert not np.array_equal(mid, _render(quality, 0.5, negative="something else")[0])
    assert info["transformer_passes"] == info["steps"]  # CFG batches cond+uncond in one pass
