"""The built-in engine presets, registered exactly as a third-party preset would be.

Importing this module imports neither torch nor diffusers: a preset is data plus a
``"module:function"`` loader that only the worker resolves. The preset objects are module
constants so that each loader reads its capabilities from here instead of restating them.

- ``tiny-*``: the real LTX-2 / FLUX.2 klein / Qwen-Image-Edit architectures at toy size with
  random weights, built locally on first load (:mod:`kinema.engines.tiny`); the output is noise,
  but every shape, frame count, audio track and code path is the real one. For tests and smoke
  runs.
- ``static-*``: no model at all (numpy/Pillow): the input image, fitted, as a still video with a
  quiet tone, or as the output image. For fast tests and benchmarks of everything around engines.
"""

from __future__ import annotations

import dataclasses

from kinema.engines.base import Capabilities, PhaseShares, Task
from kinema.engines.registry import Preset, Resources, register

_LOCAL = "random weights built locally"
_TINY = Resources(gpus=1, memory_gib=1.0, offload_memory_gib=1.0)
_CPU = Resources(gpus=0)
_COMPOSER = (Task.IMAGE_TO_IMAGE,)
"""Video presets without reference inputs compose elements into the first frame with the
image engine, so their workers load it too."""

# GPU memory estimates (GiB) of the production presets, weights in bf16 plus working memory at
# the largest contract size; to be replaced by measurements on a GPU. LTX-2.5: ~66 GiB of
# weights (22B transformer, Gemma-family 12B text encoder, VAEs, upsampler); with model CPU
# offload the peak is the largest component (transformer) plus activations.
LTX25_RESOURCES = Resources(gpus=1, memory_gib=72.0, offload_memory_gib=48.0)
_TEST_TAGS = frozenset({"test"})

# Where a run's time goes, for progress (PhaseShares: loading, denoising, decoding, encoding,
# storing). Tiny and static presets: measured by bench/engine_overhead.py (a 5 s 1920×1080
# video with audio, a 1K image; 2 vCPU) — their model is toy-sized, so the media path (frames
# scaled and encoded at 1080p; the image's PNG) is nearly all of a run. Production presets:
# estimates until measured on a GPU, where denoising dominates (docs/performance.md,
# "Progress by phase").
TINY_LTX2_SHARES = PhaseShares(
    loading=0.01, denoising=0.01, decoding=0.73, encoding=0.24, storing=0.01
)
TINY_TWO_STAGE_SHARES = PhaseShares(
    loading=0.01, denoising=0.02, decoding=0.72, encoding=0.24, storing=0.01
)
TINY_QUALITY_SHARES = PhaseShares(
    loading=0.01, denoising=0.01, decoding=0.72, encoding=0.25, storing=0.01
)
STATIC_VIDEO_SHARES = PhaseShares(
    loading=0.01, denoising=0.01, decoding=0.74, encoding=0.23, storing=0.01
)
TINY_FLUX2_SHARES = PhaseShares(
    loading=0.03, denoising=0.10, decoding=0.0, encoding=0.86, storing=0.01
)
TINY_QWEN_SHARES = PhaseShares(
    loading=0.07, denoising=0.50, decoding=0.0, encoding=0.42, storing=0.01
)
"""True CFG: two transformer passes a step, so its denoising outweighs the tiny FLUX.2's."""
STATIC_IMAGE_SHARES = PhaseShares(
    loading=0.17, denoising=0.27, decoding=0.0, encoding=0.55, storing=0.01
)
LTX25_DISTILLED_SHARES = PhaseShares(
    loading=0.01, denoising=0.78, decoding=0.18, encoding=0.02, storing=0.01
)
"""Estimate: 11 steps of the 19B transformer, then a tiled 1080p VAE decode overlapped with
the encode; the encoder's flush and the upload are seconds."""
LTX25_QUALITY_SHARES = PhaseShares(
    loading=0.01, denoising=0.90, decoding=0.07, encoding=0.01, storing=0.01
)
"""Estimate: 43 steps with classifier-free guidance, the same decode."""
FLUX2_KLEIN_SHARES = PhaseShares(
    loading=0.02, denoising=0.80, decoding=0.0, encoding=0.16, storing=0.02
)
"""Estimate: 4 steps (the VAE decode inside the pipeline call), then a 1–4 MP PNG."""
QWEN_IMAGE_EDIT_SHARES = PhaseShares(
    loading=0.01, denoising=0.96, decoding=0.0, encoding=0.02, storing=0.01
)
"""Estimate: 40 steps with true CFG (80 transformer passes)."""

MAX_VIDEO_FRAMES = 361
"""15 s at 24 fps on LTX-2's 8k+1 grid: the longest contract duration in one call."""

MAX_IMAGE_REFERENCES = 1 + 3 * 4
"""Every image the image engine receives: the source plus 3 elements × (frontal + 3 references)."""

LTX2_VIDEO = Capabilities(
    task=Task.IMAGE_TO_VIDEO,
    fps=24,
    max_frames=MAX_VIDEO_FRAMES,
    frame_grid=8,
    size_multiple=32,
    audio=True,
    # A speech track is encoded into audio latents and held frozen while the video is denoised
    # (kinema.engines.ltx2_frozen_audio): what voice_ids need.
    follows_audio=True,
)
"""What every LTX-2 preset can do (distilled: guidance knobs ignored)."""

TINY_LTX2 = register(
    Preset(
        name="tiny-ltx2",
        capabilities=dataclasses.replace(
            LTX2_VIDEO, max_working_side=64, phase_shares=TINY_LTX2_SHARES
        ),
        loader="kinema.engines.ltx2:load_tiny",
        description=(
            "LTX-2 image-to-video with audio (LTX2ConditionPipeline) at toy size: start frame, "
            "optional end keyframe, distilled settings (one transformer pass per step)."
        ),
        license="Apache-2.0 (diffusers code; the weights are random)",
        weights=_LOCAL,
        tags=_TEST_TAGS | {"tiny"},
        resources=_TINY,
        needs=_COMPOSER,
    )
)

TINY_LTX2_QUALITY = register(
    Preset(
        name="tiny-ltx2-quality",
        capabilities=dataclasses.replace(
            TINY_LTX2.capabilities,
            honours_cfg=True,
            honours_negative_prompt=True,
            phase_shares=TINY_QUALITY_SHARES,
        ),
        loader="kinema.engines.ltx2:load_tiny_quality",
        description=(
            "The tiny LTX-2 with full-model settings: cfg_scale maps to classifier-free guidance "
            "(the 'ltx2' row of the guidance table) and negative_prompt is used."
        ),
        license="Apache-2.0 (diffusers code; the weights are random)",
        weights=_LOCAL,
        tags=_TEST_TAGS | {"tiny"},
        resources=_TINY,
        needs=_COMPOSER,
    )
)

TINY_LTX2_TWO_STAGE = register(
    Preset(
        name="tiny-ltx2-two-stage",
        # Two-stage renders half size first, upsamples ×2 in latent space, then refines: the final
        # size is on a 64 grid (twice the VAE's 32). A 128 cap keeps the aspect visible.
        capabilities=dataclasses.replace(
            LTX2_VIDEO, size_multiple=64, max_working_side=128, phase_shares=TINY_TWO_STAGE_SHARES
        ),
        loader="kinema.engines.ltx2:load_tiny_two_stage",
        description=(
            "The tiny LTX-2 in two stages, as ltx2.5-distilled runs: a half-resolution pass, the "
            "LTX2LatentUpsamplePipeline ×2 and a short refinement pass; one pass per step."
        ),
        license="Apache-2.0 (diffusers code; the weights are random)",
        weights=_LOCAL,
        tags=_TEST_TAGS | {"tiny"},
        resources=_TINY,
        needs=_COMPOSER,
    )
)

TINY_FLUX2_KLEIN = register(
    Preset(
        name="tiny-flux2-klein",
        capabilities=Capabilities(
            task=Task.IMAGE_TO_IMAGE,
            size_multiple=16,
            max_references=MAX_IMAGE_REFERENCES,
            max_working_side=64,
            phase_shares=TINY_FLUX2_SHARES,
        ),
        loader="kinema.engines.flux2:load_tiny",
        description=(
            "FLUX.2 klein image-to-image (Flux2KleinPipeline) at toy size: the source image plus "
            "element images as references."
        ),
        license="Apache-2.0 (diffusers code; the weights are random)",
        weights=_LOCAL,
        tags=_TEST_TAGS | {"tiny"},
        resources=_TINY,
    )
)

QWEN_IMAGE_EDIT_CAPABILITIES = Capabilities(
    task=Task.IMAGE_TO_IMAGE,
    size_multiple=16,  # the VAE's 8× times the pipeline's 2×2 latent packing
    # The model cards give 1 to 3 input images as the range the model does well in.
    max_references=3,
    # Qwen-Image's largest recommended size (1664×928); 2K outputs are upscaled by the worker.
    max_working_side=1664,
    phase_shares=QWEN_IMAGE_EDIT_SHARES,
)
"""Qwen-Image-Edit-Plus with the real image-to-image contract: no cfg_scale or negative_prompt
reaches it, so the preset's own guidance setting applies."""

TINY_QWEN_IMAGE_EDIT = register(
    Preset(
        name="tiny-qwen-image-edit",
        capabilities=dataclasses.replace(
            QWEN_IMAGE_EDIT_CAPABILITIES, max_working_side=64, phase_shares=TINY_QWEN_SHARES
        ),
        loader="kinema.engines.qwen:load_tiny",
        description=(
            "Qwen-Image-Edit-2511 image-to-image (QwenImageEditPlusPipeline) at toy size: the "
            "source plus element images as Picture 1..3, true CFG (two transformer passes a step)."
        ),
        license="Apache-2.0 (diffusers code; the weights are random)",
        weights=_LOCAL,
        tags=_TEST_TAGS | {"tiny"},
        resources=_TINY,
    )
)

STATIC_VIDEO = register(
    Preset(
        name="static-video",
        capabilities=Capabilities(
            task=Task.IMAGE_TO_VIDEO,
            fps=24,
            max_frames=MAX_VIDEO_FRAMES,
            frame_grid=1,
            size_multiple=16,
            audio=True,
            max_working_side=64,
            phase_shares=STATIC_VIDEO_SHARES,
        ),
        loader="kinema.engines.static:load_video",
        description=(
            "No model: the start image as a still video (a crossfade to the end image when one is "
            "given) with a quiet tone as audio. Costs nothing; for tests and benchmarks."
        ),
        license="Apache-2.0",
        weights="none",
        tags=_TEST_TAGS | {"static"},
        resources=_CPU,
        needs=_COMPOSER,
    )
)

STATIC_IMAGE = register(
    Preset(
        name="static-image",
        capabilities=Capabilities(
            task=Task.IMAGE_TO_IMAGE,
            size_multiple=16,
            max_references=MAX_IMAGE_REFERENCES,
            max_working_side=64,
            phase_shares=STATIC_IMAGE_SHARES,
        ),
        loader="kinema.engines.static:load_image",
        description="No model: the source image fitted to the working size. For tests, benchmarks.",
        license="Apache-2.0",
        weights="none",
        tags=_TEST_TAGS | {"static"},
        resources=_CPU,
    )
)


# Production presets: real weights from a local directory or the Hugging Face cache (see
# kinema.engines.weights). The LTX-2.5 presets run two stages (half-resolution pass, latent
# upsampler ×2, short refinement), hence the 64-pixel grid: 1920×1080 renders at 1920×1088.

LTX25_DISTILLED = register(
    Preset(
        name="ltx2.5-distilled",
        capabilities=dataclasses.replace(
            LTX2_VIDEO, size_multiple=64, phase_shares=LTX25_DISTILLED_SHARES
        ),
        loader="kinema.engines.ltx2:load_distilled",
        description=(
            "LTX-2.5 distilled image-to-video with native audio, two stages to 1080p (half size, "
            "latent upsampler ×2, 3 refinement steps); one pass per step."
        ),
        license="LTX-2 Community License (check the model card for your use)",
        weights="Lightricks/LTX-2.5-Diffusers",
        resources=LTX25_RESOURCES,
        needs=_COMPOSER,
    )
)

LTX25_QUALITY = register(
    Preset(
        name="ltx2.5-quality",
        capabilities=dataclasses.replace(
            LTX25_DISTILLED.capabilities,
            honours_cfg=True,
            honours_negative_prompt=True,
            phase_shares=LTX25_QUALITY_SHARES,
        ),
        loader="kinema.engines.ltx2:load_quality",
        description="LTX-2.5 full transformer: cfg_scale and negative_prompt honoured.",
        license="LTX-2 Community License (check the model card for your use)",
        weights="Lightricks/LTX-2.5-Diffusers",
        resources=LTX25_RESOURCES,
        needs=_COMPOSER,
    )
)

FLUX2_KLEIN_4B = register(
    Preset(
        name="flux2-klein-4b",
        capabilities=Capabilities(
            task=Task.IMAGE_TO_IMAGE,
            size_multiple=16,
            # FLUX.2 documents multi-reference editing with up to 10 images.
            max_references=10,
            phase_shares=FLUX2_KLEIN_SHARES,
        ),
        loader="kinema.engines.flux2:load_klein_4b",
        description="FLUX.2 [klein] 4B image editing with reference images; 4 steps.",
        license="Apache-2.0",
        weights="black-forest-labs/FLUX.2-klein-4B",
        resources=Resources(gpus=1, memory_gib=16.0, offload_memory_gib=9.0),
    )
)

QWEN_IMAGE_EDIT = register(
    Preset(
        name="qwen-image-edit",
        capabilities=QWEN_IMAGE_EDIT_CAPABILITIES,
        loader="kinema.engines.qwen:load_edit_2511",
        description=(
            "Qwen-Image-Edit-2511: image editing with up to 2 reference images; 40 steps with "
            "true CFG (4.0, two transformer passes a step). The quality tier of image-to-image."
        ),
        license="Apache-2.0",
        weights="Qwen/Qwen-Image-Edit-2511",
        resources=Resources(gpus=1, memory_gib=58.0, offload_memory_gib=42.0),
    )
)
