"""Qwen-Image-Edit image → image with reference images, over diffusers'
``QwenImageEditPlusPipeline``: the quality tier of image editing.

The pipeline takes a list of images and introduces them to its text encoder as "Picture 1",
"Picture 2", … in order: the source first, then each element's frontal and reference images. The
prompt names them the same way (``@ElementN`` → "the subject of Picture K").

The model is not distilled: it runs true classifier-free guidance, a second transformer pass per
step against a negative prompt. ``cfg_scale`` maps to ``true_cfg_scale`` through the
``qwen-image-edit`` row of :mod:`kinema.engines.guidance`. The image-to-image contract sends no
``cfg_scale`` or ``negative_prompt``, so a preset runs at its settings' values: 0.5 (scale 4.0)
with the negative prompt " ", as the model card does.

Two departures from a plain ``from_pretrained``, both scoped to this module:

- The processor. transformers refuses to build ``Qwen2VLProcessor`` without torchvision (it checks
  its video processor even when no video is passed), and PyPI's torchvision wheels are CUDA builds
  that do not load beside CPU torch. The pipeline feeds it only images and text, so
  :class:`QwenVLImageProcessor` is that processor without the video half, loaded from the same
  ``processor/`` folder (image processor and tokenizer), on every machine alike.
- Image areas. The pipeline resizes every input image to two fixed areas, module constants (384²
  for the vision encoder, 1024² for the VAE); a toy model on a CPU would spend most of its time
  there. :attr:`QwenEditSettings.image_areas` picks other areas through a subclass whose
  ``__call__`` runs the pipeline's own code against a copy of those constants; diffusers itself is
  left untouched, and the production preset keeps the real areas.
"""

from __future__ import annotations

import functools
import inspect
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from diffusers.pipelines.qwenimage.pipeline_qwenimage_edit_plus import QwenImageEditPlusPipeline
from PIL import Image
from transformers.models.qwen2_vl.processing_qwen2_vl import Qwen2VLProcessor
from transformers.processing_utils import ProcessorMixin

from kinema.engines.base import Capabilities, ImageJob, ImageOutput, ProgressFn
from kinema.engines.diffusion import edit_image, load_pipeline
from kinema.engines.geometry import working_size
from kinema.engines.guidance import GUIDANCE
from kinema.engines.plan import picture_prompt, reference_prompt
from kinema.engines.presets import QWEN_IMAGE_EDIT, TINY_QWEN_IMAGE_EDIT
from kinema.engines.registry import LoadOptions
from kinema.engines.tiny_qwen import build_tiny_qwen_image_edit
from kinema.engines.weights import resolve
from kinema.media.images import fit_image

GUIDANCE_FAMILY = "qwen-image-edit"
PROCESSOR = "processor"
"""The pipeline's processor component, and the folder its files live in."""
IMAGE_PAD, VIDEO_PAD = "<|image_pad|>", "<|video_pad|>"
"""Qwen2-VL's placeholders, expanded by the processor to one token per merged image patch."""


@dataclass(frozen=True)
class QwenEditSettings:
    """Per-preset knobs that are not capabilities (the API never needs them)."""

    steps: int = 40
    """Denoising steps unless :attr:`LoadOptions.num_inference_steps` overrides them."""
    cfg_scale: float = 0.5
    """The contract's 0..1 scale, mapped by the guidance table (0 = off: one pass per step)."""
    negative_prompt: str = " "
    """Used only with guidance on; the model card's blank prompt."""
    image_areas: tuple[int, int] | None = None
    """(vision-encoder, VAE) pixel areas every input image is resized to; ``None`` keeps the
    pipeline's own (384², 1024²), the ones to use with real weights."""


class QwenVLImageProcessor(Qwen2VLProcessor):
    """``Qwen2VLProcessor`` for images and text only: no video processor, so no torchvision.

    Everything else (image-token expansion, the tokenizer call) is the parent's code.
    """

    def __init__(self, image_processor: Any, tokenizer: Any, chat_template: Any = None) -> None:
        self.image_token = IMAGE_PAD
        self.video_token = VIDEO_PAD
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
        # Skips Qwen2VLProcessor.__init__, which insists on a video processor.
        ProcessorMixin.__init__(  # type: ignore[no-untyped-call]
            self, image_processor, tokenizer, chat_template=chat_template
        )


class QwenImageEditEngine:
    """:class:`~kinema.engines.base.ImageToImageEngine` over a loaded Qwen-Image-Edit pipeline."""

    def __init__(
        self,
        pipeline: QwenImageEditPlusPipeline,
        capabilities: Capabilities,
        settings: QwenEditSettings,
        steps: int,
    ) -> None:
        self.pipeline = pipeline
        self.capabilities = capabilities
        self.settings = settings
        self.steps = steps

    @property
    def true_cfg_scale(self) -> float:
        return GUIDANCE[GUIDANCE_FAMILY].scale(self.settings.cfg_scale)

    def generate(self, job: ImageJob, progress: ProgressFn) -> ImageOutput:
        """Edit ``job.image`` with the element images as references, at the working size.

        The source is cropped to the working aspect (at its own resolution: the pipeline resizes
        it); the worker resizes the result to the contract size.
        """
        size = working_size(job.width, job.height, self.capabilities)
        counts = [len(element.references) for element in job.elements]
        scale = self.true_cfg_scale
        output = edit_image(
            self.pipeline,
            self._condition_images(job, *size),
            size,
            steps=self.steps,
            seed=job.seed,
            progress=progress,
            prompt=picture_prompt(reference_prompt(job.prompt, counts)),
            # Guidance runs only with a negative prompt; without guidance one would be unused.
            negative_prompt=self.settings.negative_prompt if scale > 1.0 else None,
            true_cfg_scale=scale,
        )
        return ImageOutput(image=output.image, info={**output.info, "guidance_scale": scale})

    def _condition_images(self, job: ImageJob, width: int, height: int) -> list[Image.Image]:
        references = job.element_images(self.capabilities.max_references)
        source = fit_image(job.image, *_aspect_crop(job.image.size, width, height))
        return [source, *references]


def _aspect_crop(size: tuple[int, int], width: int, height: int) -> tuple[int, int]:
    """The largest ``width:height`` box inside an image of ``size``."""
    scale = min(size[0] / width, size[1] / height)
    return max(1, round(width * scale)), max(1, round(height * scale))


@functools.cache
def _with_image_areas(condition_area: int, vae_area: int) -> type[QwenImageEditPlusPipeline]:
    """``QwenImageEditPlusPipeline`` resizing input images to other areas than its constants."""
    call = inspect.unwrap(QwenImageEditPlusPipeline.__call__)
    constants = {"CONDITION_IMAGE_SIZE": condition_area, "VAE_IMAGE_SIZE": vae_area}
    if not constants.keys() <= call.__globals__.keys():
        raise RuntimeError(
            "this diffusers version's QwenImageEditPlusPipeline has no module constants "
            f"{sorted(constants)}; the image_areas setting needs updating for it"
        )
    scope = {**call.__globals__, **constants}
    scoped = types.FunctionType(
        call.__code__, scope, call.__name__, call.__defaults__, call.__closure__
    )
    scoped.__kwdefaults__ = call.__kwdefaults__
    name = f"QwenImageEditPlusPipeline{condition_area}x{vae_area}"
    return type(name, (QwenImageEditPlusPipeline,), {"__call__": torch.no_grad()(scoped)})


def load(
    source: str | Path,
    options: LoadOptions,
    capabilities: Capabilities,
    settings: QwenEditSettings,
) -> QwenImageEditEngine:
    """Load Qwen-Image-Edit(-Plus) weights from a hub id or local directory (any preset)."""
    areas = settings.image_areas
    pipeline_class = QwenImageEditPlusPipeline if areas is None else _with_image_areas(*areas)
    pipeline = load_pipeline(pipeline_class, source, options, processor=None)
    processor = QwenVLImageProcessor.from_pretrained(str(source), subfolder=PROCESSOR)
    cast(Any, pipeline).register_modules(processor=processor)  # untyped in diffusers
    steps = options.num_inference_steps or settings.steps
    return QwenImageEditEngine(pipeline, capabilities, settings, steps)


TINY_SETTINGS = QwenEditSettings(steps=2, image_areas=(64 * 64, 64 * 64))


def load_tiny(options: LoadOptions) -> QwenImageEditEngine:
    """Loader of ``tiny-qwen-image-edit``: build random weights once, then load them like real
    ones (small image areas keep a CPU call well under a second)."""
    directory = options.models_dir / TINY_QWEN_IMAGE_EDIT.name
    source = options.source or build_tiny_qwen_image_edit(directory)
    return load(source, options, TINY_QWEN_IMAGE_EDIT.capabilities, TINY_SETTINGS)


EDIT_2511_HUB_ID = "Qwen/Qwen-Image-Edit-2511"
EDIT_2511_SETTINGS = QwenEditSettings()


def load_edit_2511(options: LoadOptions) -> QwenImageEditEngine:
    """Loader of ``qwen-image-edit`` (40 steps, true CFG 4.0: two passes per step)."""
    source = resolve(QWEN_IMAGE_EDIT.name, EDIT_2511_HUB_ID, options)
    return load(source, options, QWEN_IMAGE_EDIT.capabilities, EDIT_2511_SETTINGS)
