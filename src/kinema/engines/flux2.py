"""FLUX.2 klein image → image with reference images, over diffusers' ``Flux2KleinPipeline``.

The pipeline takes a list of images: the source first, then every element's frontal and reference
images. klein is step-distilled, so guidance is off and each step is one transformer pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffusers.pipelines.flux2.pipeline_flux2_klein import Flux2KleinPipeline
from PIL import Image

from kinema.engines.base import Capabilities, ImageJob, ImageOutput, ProgressFn
from kinema.engines.diffusion import edit_image, load_pipeline
from kinema.engines.geometry import working_size
from kinema.engines.presets import FLUX2_KLEIN_4B, TINY_FLUX2_KLEIN
from kinema.engines.registry import LoadOptions
from kinema.engines.tiny import build_tiny_flux2_klein
from kinema.engines.weights import resolve
from kinema.media.images import fit_image

MIN_CONDITION_SIDE = 64
"""Flux2KleinPipeline rejects condition images with a side under 64 pixels."""


@dataclass(frozen=True)
class Flux2Settings:
    """Per-preset knobs that are not capabilities (the API never needs them)."""

    steps: int = 4
    """Denoising steps unless :attr:`LoadOptions.num_inference_steps` overrides them."""
    max_sequence_length: int = 512
    text_encoder_out_layers: tuple[int, ...] | None = None
    """Text-encoder layers stacked into the prompt embedding; ``None`` is the pipeline's default,
    which suits the real 4B encoder (a tiny encoder has fewer layers)."""


TINY_SETTINGS = Flux2Settings(steps=2, max_sequence_length=64, text_encoder_out_layers=(1,))


class Flux2KleinEngine:
    """:class:`~kinema.engines.base.ImageToImageEngine` over a loaded FLUX.2 klein pipeline."""

    def __init__(
        self,
        pipeline: Flux2KleinPipeline,
        capabilities: Capabilities,
        settings: Flux2Settings,
        steps: int,
    ) -> None:
        self.pipeline = pipeline
        self.capabilities = capabilities
        self.settings = settings
        self.steps = steps

    def generate(self, job: ImageJob, progress: ProgressFn) -> ImageOutput:
        """Edit ``job.image`` with the element images as references, at the working size.

        The working size keeps the job's aspect with the long side capped by ``max_working_side``;
        the worker resizes the result to the contract size.
        """
        size = working_size(job.width, job.height, self.capabilities)
        return edit_image(
            self.pipeline,
            self._condition_images(job, *size),
            size,
            steps=self.steps,
            seed=job.seed,
            progress=progress,
            prompt=job.prompt,
            guidance_scale=1.0,
            max_sequence_length=self.settings.max_sequence_length,
            **self._text_encoder_kwargs(),
        )

    def _condition_images(self, job: ImageJob, width: int, height: int) -> list[Image.Image]:
        references = job.element_images(self.capabilities.max_references)
        long_side = max(width, height)
        step = self.capabilities.size_multiple
        source = fit_image(job.image, *_condition_size(width, height, long_side, step))
        # References need no more detail than the output has; bounding them bounds the tokens.
        return [source, *(_fit_reference(image, long_side, step) for image in references)]

    def _text_encoder_kwargs(self) -> dict[str, Any]:
        layers = self.settings.text_encoder_out_layers
        return {} if layers is None else {"text_encoder_out_layers": layers}


def load(
    source: str | Path,
    options: LoadOptions,
    capabilities: Capabilities,
    settings: Flux2Settings,
) -> Flux2KleinEngine:
    """Load FLUX.2 klein weights from a hub id or local directory (any klein preset)."""
    pipeline = load_pipeline(Flux2KleinPipeline, source, options)
    steps = options.num_inference_steps or settings.steps
    return Flux2KleinEngine(pipeline, capabilities, settings, steps)


def load_tiny(options: LoadOptions) -> Flux2KleinEngine:
    """Loader of ``tiny-flux2-klein``: build random weights once, then load them like real ones."""
    source = options.source or build_tiny_flux2_klein(options.models_dir / "tiny-flux2-klein")
    return load(source, options, TINY_FLUX2_KLEIN.capabilities, TINY_SETTINGS)


def _fit_reference(image: Image.Image, long_side: int, step: int) -> Image.Image:
    return fit_image(image, *_condition_size(image.width, image.height, long_side, step))


def _condition_size(width: int, height: int, long_side: int, step: int) -> tuple[int, int]:
    """``width:height`` scaled to fit ``long_side`` (never up), yet with both sides ≥ 64."""
    scale = max(min(1.0, long_side / max(width, height)), MIN_CONDITION_SIDE / min(width, height))
    return (
        max(MIN_CONDITION_SIDE, round(width * scale / step) * step),
        max(MIN_CONDITION_SIDE, round(height * scale / step) * step),
    )


KLEIN_4B_HUB_ID = "black-forest-labs/FLUX.2-klein-4B"
KLEIN_SETTINGS = Flux2Settings(steps=4)


def load_klein_4b(options: LoadOptions) -> Flux2KleinEngine:
    """Loader of ``flux2-klein-4b`` (step-distilled: 4 steps, no guidance)."""
    source = resolve(FLUX2_KLEIN_4B.name, KLEIN_4B_HUB_ID, options)
    return load(source, options, FLUX2_KLEIN_4B.capabilities, KLEIN_SETTINGS)
