"""``cfg_scale`` (0..1, the contract's prompt adherence) → a model's guidance scale, by one table.

0 means guidance off (scale 1: one conditional pass, the negative prompt unused); 0.5, the
contract's default, is the model's recommended scale; 1 is the strongest scale we allow. In
between the mapping is linear on each side of 0.5. Distilled presets have no map: they ignore
``cfg_scale`` and say so in the output metadata.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GuidanceMap:
    off: float = 1.0
    recommended: float = 3.0
    maximum: float = 7.0

    def scale(self, cfg_scale: float) -> float:
        cfg = min(1.0, max(0.0, cfg_scale))
        if cfg <= 0.5:
            return self.off + (self.recommended - self.off) * cfg / 0.5
        return self.recommended + (self.maximum - self.recommended) * (cfg - 0.5) / 0.5


GUIDANCE: dict[str, GuidanceMap] = {
    # LTX-2's pipeline default (3.0) is the recommended scale of the full (non-distilled) model.
    "ltx2": GuidanceMap(off=1.0, recommended=3.0, maximum=7.0),
    # Qwen-Image-Edit's true CFG (true_cfg_scale): the model card runs 4.0 with negative prompt
    # " ". The maximum, twice that, is a cautious choice (the pipeline rescales the guided
    # prediction to the conditional one's norm), not yet tuned on real weights.
    "qwen-image-edit": GuidanceMap(off=1.0, recommended=4.0, maximum=8.0),
}
"""The mapping table, by model family (docs/engines.md shows it)."""
