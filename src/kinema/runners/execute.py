"""One job inside the worker: inputs → engine → conform to the contract → encode → output file.
Runs in the worker process only (engines import torch)."""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt
from PIL import Image

from kinema.engines.base import (
    Element,
    Engine,
    ImageJob,
    ImageToImageEngine,
    ImageToVideoEngine,
    ProgressFn,
    Task,
    VideoJob,
)
from kinema.engines.plan import reference_prompt, split_prompt, video_prompt
from kinema.media.conform import conform_image, conform_video, join_audio
from kinema.media.images import IMAGE_MIME, encode_image
from kinema.media.video import encode_mp4


class ExecutionError(Exception):
    """The generation cannot be done as asked (a final failure, not a crash)."""


def _open_image(source: str | BinaryIO) -> Image.Image:
    """An input image from its file path, or from the in-memory file it came as."""
    with Image.open(source) as img:
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
        composer = engines.get(Task.IMAGE_TO_IMAGE)
        assert composer is None or isinstance(composer, ImageToImageEngine)
        path, content_type, meta = _video(engine, params, inputs, output_dir, progress, composer)
    else:
        assert isinstance(engine, ImageToImageEngine)
        path, content_type, meta = _image(engine, params, inputs, output_dir, progress)
    return {
        "output_path": str(path),
        "content_type": content_type,
        "metadata": meta,
        "inference_time": time.perf_counter() - started,
    }


def _elements(inputs: dict[str, Any]) -> tuple[Element, ...]:
    """Element images from the stored inputs (``element<N>_frontal`` / ``_references``)."""
    found: list[Element] = []
    n = 1
    while (frontal := inputs.get(f"element{n}_frontal")) is not None:
        refs = tuple(_open_image(p) for p in inputs.get(f"element{n}_references", []))
        found.append(Element(frontal=_open_image(frontal), references=refs))
        n += 1
    return tuple(found)


def _shots(params: dict[str, Any]) -> list[tuple[str, int]]:
    """(prompt, seconds) per shot: ``multi_prompt`` (customize) as given, the request's
    ``prompt``, when also given, prefixed as context; ``intelligence`` splits the prompt by the
    rule in :mod:`kinema.engines.plan`; otherwise one shot."""
    context = params["prompt"].strip()
    shots = params.get("shots") or []
    if shots:
        return [(f"{context} {s['prompt']}".strip(), int(s["duration_s"])) for s in shots]
    if params.get("shot_type") == "intelligence":
        return split_prompt(context, params["duration_s"])
    return [(context, params["duration_s"])]


def _scaled(progress: ProgressFn, index: int, count: int) -> ProgressFn:
    return lambda value: progress((index + value) / count)


def _video(
    engine: ImageToVideoEngine,
    params: dict[str, Any],
    inputs: dict[str, Any],
    out: Path,
    progress: ProgressFn,
    composer: ImageToImageEngine | None = None,
) -> tuple[Path, str, dict[str, Any]]:
    """One generation per shot (hard cuts), each conformed to the contract size and its exact
    frame count, then joined; audio joined with short fades at the cuts. Elements, for a video
    engine that takes no reference images, are first composed into the start frame by the
    image engine."""
    end = inputs.get("end_image")
    fps, audio_on = params["fps"], params["generate_audio"]
    start = _open_image(inputs["start_image"])
    elements = _elements(inputs)
    seed = params.get("seed")
    if seed is None:  # drawn once, so the reported seed reproduces every shot
        seed = secrets.randbelow(2**31)
    composed = bool(elements) and engine.capabilities.max_references == 0
    if composed:
        if composer is None:
            raise ExecutionError("elements need an image engine to compose the first frame")
        start = _compose_keyframe(composer, params, start, elements, seed)
    shots = [(video_prompt(p), s) for p, s in _shots(params)] if elements else _shots(params)
    frame_parts: list[npt.NDArray[np.uint8]] = []
    audio_parts: list[npt.NDArray[np.float32] | None] = []
    shot_info: list[dict[str, Any]] = []
    rate = 0
    for index, (prompt, seconds) in enumerate(shots):
        last = index == len(shots) - 1
        job = VideoJob(
            prompt=prompt,
            negative_prompt=params["negative_prompt"],
            start_image=start,
            end_image=_open_image(end) if end and last else None,
            width=params["width"],
            height=params["height"],
            num_frames=seconds * fps,
            fps=fps,
            cfg_scale=params["cfg_scale"],
            generate_audio=audio_on,
            elements=() if composed else elements,
            seed=(seed + index) % 2**32,  # each shot its own noise, from the one reported seed
        )
        result = engine.generate(job, _scaled(progress, index, len(shots)))
        frames, audio, rate = conform_video(
            result,
            width=job.width,
            height=job.height,
            num_frames=job.num_frames,
            fps=fps,
            generate_audio=audio_on,
        )
        frame_parts.append(frames)
        audio_parts.append(audio)
        shot_info.append(dict(result.info))
    has_audio = audio_on and all(part is not None for part in audio_parts)
    all_audio = join_audio(audio_parts, rate) if has_audio else None
    all_frames = frame_parts[0] if len(frame_parts) == 1 else np.concatenate(frame_parts)
    path = out / "output.mp4"
    # A cancel still stops the job while it encodes (seconds for a long 1080p clip).
    encode_mp4(path, all_frames, fps, all_audio, rate, check=lambda: progress(1.0))
    meta: dict[str, Any] = {
        "width": params["width"],
        "height": params["height"],
        "fps": fps,
        "frames": len(all_frames),
        "duration": len(all_frames) / fps,
        "has_audio": all_audio is not None,
        "shots": len(shots),
        "seed": seed,
    }
    if composed:
        meta["composed_keyframe"] = True
    if not engine.capabilities.honours_cfg:
        meta["cfg_scale_honoured"] = False
    if not engine.capabilities.honours_negative_prompt:
        meta["negative_prompt_honoured"] = False
    meta.update(_shot_meta(shot_info, [len(part) for part in frame_parts], meta))
    return path, "video/mp4", meta


def _shot_meta(
    shot_info: list[dict[str, Any]], shot_frames: list[int], meta: dict[str, Any]
) -> dict[str, Any]:
    """The engine's facts for ``x-output-metadata``: one shot's as they are; for several, the
    facts every shot shares, each shot's own under ``shot_info``, and the end keyframe counted
    in the whole video's frames."""
    if len(shot_info) == 1:
        return {k: v for k, v in shot_info[0].items() if k not in meta}
    first, *rest = shot_info
    shared = {k: v for k, v in first.items() if all(info.get(k) == v for info in rest)}
    facts: dict[str, Any] = {k: v for k, v in shared.items() if k not in meta}
    facts["shot_info"] = shot_info
    end_frame = shot_info[-1].get("end_image_frame")
    if isinstance(end_frame, int):
        facts["end_image_frame"] = sum(shot_frames[:-1]) + end_frame
    return facts


def _compose_keyframe(
    composer: ImageToImageEngine,
    params: dict[str, Any],
    start: Image.Image,
    elements: tuple[Element, ...],
    seed: int,
) -> Image.Image:
    """The start image with the elements composed in, at the video's size."""
    counts = [len(e.references) for e in elements]
    job = ImageJob(
        prompt=reference_prompt(params["prompt"] or "the scene", counts),
        image=start,
        width=params["width"],
        height=params["height"],
        elements=elements,
        seed=seed,
    )
    return conform_image(composer.generate(job, lambda _p: None).image, job.width, job.height)


def _image(
    engine: ImageToImageEngine,
    params: dict[str, Any],
    inputs: dict[str, Any],
    out: Path,
    progress: ProgressFn,
) -> tuple[Path, str, dict[str, Any]]:
    elements = _elements(inputs)
    job = ImageJob(
        prompt=reference_prompt(params["prompt"], [len(e.references) for e in elements]),
        image=_open_image(inputs["image"]),
        width=params["width"],
        height=params["height"],
        elements=elements,
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
