"""One job inside the worker: inputs → engine → conform to the contract → encode → output file.
Runs in the worker process only (engines import torch)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from PIL import Image

from kinema.engines.base import (
    Engine,
    ImageJob,
    ImageToImageEngine,
    ImageToVideoEngine,
    ProgressFn,
    Task,
    VideoJob,
)
from kinema.media.conform import conform_image, conform_video
from kinema.media.images import IMAGE_MIME, encode_image
from kinema.media.video import encode_mp4


class ExecutionError(Exception):
    """The generation cannot be done as asked (a final failure, not a crash)."""


def _open_image(path: str) -> Image.Image:
    with Image.open(path) as img:
        return img.convert("RGB")


def execute(
    engines: dict[Task, Engine],
    task: str,
    params: dict[str, Any],
    inputs: dict[str, Any],
    output_dir: Path,
    progress: ProgressFn,
) -> dict[str, Any]:
    """Run one job and write its output into ``output_dir``; returns the result message."""
    kind = Task(task)
    engine = engines.get(kind)
    if engine is None:
        raise ExecutionError(f"no engine is loaded for {kind.value}")
    started = time.perf_counter()
    if kind is Task.IMAGE_TO_VIDEO:
        assert isinstance(engine, ImageToVideoEngine)
        path, content_type, meta = _video(engine, params, inputs, output_dir, progress)
    else:
        assert isinstance(engine, ImageToImageEngine)
        path, content_type, meta = _image(engine, params, inputs, output_dir, progress)
    return {
        "output_path": str(path),
        "content_type": content_type,
        "metadata": meta,
        "inference_time": time.perf_counter() - started,
    }


def _video(
    engine: ImageToVideoEngine,
    params: dict[str, Any],
    inputs: dict[str, Any],
    out: Path,
    progress: ProgressFn,
) -> tuple[Path, str, dict[str, Any]]:
    end = inputs.get("end_image")
    job = VideoJob(
        prompt=params["prompt"],
        negative_prompt=params["negative_prompt"],
        start_image=_open_image(inputs["start_image"]),
        end_image=_open_image(end) if end else None,
        width=params["width"],
        height=params["height"],
        num_frames=params["num_frames"],
        fps=params["fps"],
        cfg_scale=params["cfg_scale"],
        generate_audio=params["generate_audio"],
        seed=params.get("seed"),
    )
    result = engine.generate(job, progress)
    frames, audio, rate = conform_video(
        result,
        width=job.width,
        height=job.height,
        num_frames=job.num_frames,
        fps=job.fps,
        generate_audio=job.generate_audio,
    )
    path = out / "output.mp4"
    encode_mp4(path, frames, job.fps, audio, rate)
    meta: dict[str, Any] = {
        "width": job.width,
        "height": job.height,
        "fps": job.fps,
        "frames": job.num_frames,
        "duration": job.num_frames / job.fps,
        "has_audio": audio is not None,
    }
    if not engine.capabilities.honours_cfg:
        meta["cfg_scale_honoured"] = False
    meta.update({k: v for k, v in result.info.items() if k not in meta})
    return path, "video/mp4", meta


def _image(
    engine: ImageToImageEngine,
    params: dict[str, Any],
    inputs: dict[str, Any],
    out: Path,
    progress: ProgressFn,
) -> tuple[Path, str, dict[str, Any]]:
    job = ImageJob(
        prompt=params["prompt"],
        image=_open_image(inputs["image"]),
        width=params["width"],
        height=params["height"],
        seed=params.get("seed"),
    )
    result = engine.generate(job, progress)
    image = conform_image(result.image, job.width, job.height)
    fmt = params["output_format"]
    path = out / f"output.{fmt}"
    path.write_bytes(encode_image(image, fmt))
    meta: dict[str, Any] = {"width": job.width, "height": job.height, "format": fmt}
    meta.update({k: v for k, v in result.info.items() if k not in meta})
    return path, IMAGE_MIME[fmt], meta
