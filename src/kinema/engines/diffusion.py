"""Torch-side plumbing shared by the diffusers engines (worker process only).

Device and dtype choice, loading a pipeline through ``from_pretrained`` (hub id or local
directory, the same call for real and tiny weights), placement, seeds, per-step progress,
counting transformer passes, and the one call of the image-edit pipelines.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import torch
from diffusers.pipelines.pipeline_utils import DiffusionPipeline
from PIL import Image

from kinema.engines.base import ImageOutput, ProgressFn
from kinema.engines.registry import LoadOptions

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


P = TypeVar("P", bound=DiffusionPipeline)


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when present, else CPU; anything else is passed to ``torch.device``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto`` is bfloat16 on CUDA and float32 elsewhere (CPU bfloat16 kernels are slow)."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    try:
        return _DTYPES[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r} (known: auto, {', '.join(_DTYPES)})") from None


def load_pipeline(
    pipeline_class: type[P], source: str | Path, options: LoadOptions, **components: Any
) -> P:
    """Load ``pipeline_class`` from a hub id or local directory and place it per ``options``.

    ``components`` replace the named components instead of loading them (``None`` skips one).
    """
    device = resolve_device(options.device)
    dtype = resolve_dtype(options.dtype, device)
    pipe = pipeline_class.from_pretrained(str(source), dtype=dtype, **components)
    # Model offload moves each component to the accelerator only while it runs; on a CPU-only
    # machine everything already lives in host memory, so there is nothing to offload.
    if options.cpu_offload and device.type != "cpu":
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe = pipe.to(device)
    if options.vae_tiling:
        pipe.vae.enable_tiling()
    # Progress goes to the job through step_callback, not to a tqdm bar on stderr; the method is
    # untyped in diffusers, hence the cast.
    cast(Any, pipe).set_progress_bar_config(disable=True)
    return pipe


def seeded_generator(seed: int | None) -> tuple[torch.Generator, int]:
    """A CPU generator (identical noise on every device) and the seed it used, drawn if None."""
    used = secrets.randbelow(2**31) if seed is None else seed
    return torch.Generator(device="cpu").manual_seed(used), used


def step_callback(progress: ProgressFn, total_steps: int) -> Callable[..., dict[str, Any]]:
    """A diffusers ``callback_on_step_end`` reporting ``(step + 1) / total`` to ``progress``.

    ``progress`` may raise :class:`~kinema.engines.base.EngineCancelled`; it propagates out of
    the pipeline call, which stops the generation before the next step.
    """

    def on_step_end(_pipe: object, step: int, _timestep: object, _kwargs: object) -> dict[str, Any]:
        progress(min(1.0, (step + 1) / total_steps))
        return {}

    return on_step_end


def edit_image(
    pipeline: DiffusionPipeline,
    images: list[Image.Image],
    size: tuple[int, int],
    *,
    steps: int,
    seed: int | None,
    progress: ProgressFn,
    **call: Any,
) -> ImageOutput:
    """One call of an image-edit pipeline that takes a list of images (the source first, then
    the references) at the working ``size``: the RGB result, and what the run did (steps,
    transformer passes, seed, references, working size). ``call``: the pipeline's own
    arguments (prompt, guidance, …)."""
    width, height = size
    generator, used = seeded_generator(seed)
    call_pipeline = cast(Any, pipeline)  # __call__ is each pipeline's own, untyped in diffusers
    with count_calls(cast(torch.nn.Module, call_pipeline.transformer)) as passes:
        result = call_pipeline(
            image=images,
            width=width,
            height=height,
            num_inference_steps=steps,
            generator=generator,
            output_type="pil",
            return_dict=False,
            callback_on_step_end=step_callback(progress, steps),
            **call,
        )
    image = cast(list[Image.Image], result[0])[0].convert("RGB")
    info = {
        "steps": steps,
        "transformer_passes": passes.calls,
        "seed": used,
        "reference_images": len(images) - 1,
        "working_size": [width, height],
    }
    return ImageOutput(image=image, info=info)


@dataclass
class CallCount:
    calls: int = 0


@contextmanager
def count_calls(module: torch.nn.Module) -> Iterator[CallCount]:
    """Count forward calls of ``module`` while the context is open (transformer passes)."""
    count = CallCount()

    def hook(*_args: object) -> None:
        count.calls += 1

    handle = module.register_forward_hook(hook)
    try:
        yield count
    finally:
        handle.remove()
