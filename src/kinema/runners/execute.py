"""One job inside the worker: inputs → engine → conform to the contract → encode → output in
the storage. Runs in the worker process only (engines import torch)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import numpy as np
import numpy.typing as npt
from PIL import Image
from pydantic import JsonValue, TypeAdapter, ValidationError

from kinema.engines.base import (
    Element,
    Engine,
    ImageJob,
    ImageToImageEngine,
    ImageToVideoEngine,
    ProgressFn,
    Task,
    VideoJob,
    VideoOutput,
)
from kinema.engines.plan import reference_prompt, video_prompt
from kinema.errors import KinemaError
from kinema.jobs.spec import ElementInputs, ImageSpec, VideoSpec
from kinema.media.conform import conform_image, conform_video, join_audio
from kinema.media.images import IMAGE_MIME, decode_image, encode_image
from kinema.media.video import encode_mp4
from kinema.runners.protocol import Phase, RunResult, RunTask
from kinema.storage.blobs import Blobs, InputMissing


class ExecutionError(Exception):
    """The generation cannot be done as asked (a final failure, not a crash)."""


class Inputs:
    """A run's input images: those that came with it, else from the storage."""

    def __init__(self, blobs: Blobs, inline: Mapping[str, bytes]) -> None:
        self._blobs = blobs
        self._inline = inline

    def image(self, key: str, *, cover: tuple[int, int] | None = None) -> Image.Image:
        """Upright RGB (EXIF orientation applied, transparency on white, 16-bit scaled): the
        one normalisation every input image goes through — then shrunk to what the engine
        uses (:func:`_shrunk`), so a request's images never stay in memory at full size."""
        name = key.rsplit("/", 1)[-1].split("-", 1)[-1]
        data = self._inline.get(key)
        if data is None:
            try:
                with self._blobs.open(key) as stream:
                    data = stream.read()
            except InputMissing:
                raise ExecutionError(
                    f"the {name} input is no longer stored (it may have expired); "
                    "submit the request again"
                ) from None
        try:
            image = decode_image(data, field=name)
        except KinemaError as exc:
            raise ExecutionError(exc.message) from exc
        return _shrunk(image, cover)

    def elements(self, elements: tuple[ElementInputs, ...]) -> tuple[Element, ...]:
        return tuple(
            Element(
                frontal=self.image(e.frontal),
                references=tuple(self.image(r) for r in e.references),
            )
            for e in elements
        )


REFERENCE_MAX_SIDE = 2048
"""Element and reference images are kept at most this large (the engines work at 1-2 MP)."""


def _shrunk(image: Image.Image, cover: tuple[int, int] | None) -> Image.Image:
    """``image`` no larger than needed: twice the size that still covers ``cover`` (an output
    the image is center-cropped to), else :data:`REFERENCE_MAX_SIDE` on its long side."""
    width, height = image.size
    if cover is None:
        scale = REFERENCE_MAX_SIDE / max(width, height)
    else:
        scale = 2 * max(cover[0] / width, cover[1] / height)
    if scale >= 1:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS)


def execute(
    engines: Mapping[Task, Engine],
    task: RunTask,
    blobs: Blobs,
    progress: ProgressFn,
    phase: Callable[[Phase], None] = lambda _phase: None,
) -> RunResult:
    """Run one job and store its output under ``outputs/<job id>/``; ``phase`` hears where the
    run is (denoising, encoding, storing)."""
    spec = task.spec
    kind = Task(spec.task)
    engine = engines.get(kind)
    if engine is None:
        raise ExecutionError(f"no engine is loaded for {kind.value}")
    inputs = Inputs(blobs, task.inline)
    started = time.perf_counter()
    prefix = f"outputs/{task.job_id}"
    if isinstance(spec, VideoSpec):
        assert isinstance(engine, ImageToVideoEngine)
        composer = engines.get(Task.IMAGE_TO_IMAGE)
        assert composer is None or isinstance(composer, ImageToImageEngine)
        key, content_type, meta = _video(
            engine, spec, inputs, _Out(blobs, prefix, phase), progress, composer
        )
    else:
        assert isinstance(engine, ImageToImageEngine)
        key, content_type, meta = _image(engine, spec, inputs, _Out(blobs, prefix, phase), progress)
    return RunResult(
        output_key=key,
        content_type=content_type,
        metadata=meta,
        inference_time=time.perf_counter() - started,
    )


Facts = dict[str, JsonValue]
_FACTS: TypeAdapter[Facts] = TypeAdapter(Facts)


def _facts(info: Mapping[str, object]) -> Facts:
    """An engine's facts for ``x-output-metadata``, which must be JSON (tuples become lists)."""
    try:
        return _FACTS.validate_python(
            {k: list(v) if isinstance(v, tuple) else v for k, v in info.items()}
        )
    except ValidationError as exc:
        raise ExecutionError(f"the engine reported facts that are not JSON: {exc}") from exc


class _Out:
    """Where a run's output goes, and who hears its phases."""

    def __init__(self, blobs: Blobs, prefix: str, phase: Callable[[Phase], None]) -> None:
        self.blobs = blobs
        self.prefix = prefix
        self.phase = phase


def _scaled(progress: ProgressFn, index: int, count: int) -> ProgressFn:
    return lambda value: progress((index + value) / count)


def _checked(result: VideoOutput) -> VideoOutput:
    """An engine's output that the contract can be made from (an engine bug otherwise)."""
    if result.audio is not None and not np.isfinite(result.audio).all():
        raise ExecutionError("the engine produced audio with NaN or infinite samples")
    return result


def _video(
    engine: ImageToVideoEngine,
    spec: VideoSpec,
    inputs: Inputs,
    out: _Out,
    progress: ProgressFn,
    composer: ImageToImageEngine | None = None,
) -> tuple[str, str, Facts]:
    """One generation per shot (hard cuts), each conformed to the contract size and its exact
    frame count, then joined; audio joined with short fades at the cuts. Elements, for a video
    engine that takes no reference images, are first composed into the start frame by the
    image engine."""
    fps, audio_on, seed = spec.fps, spec.generate_audio, spec.seed
    start = inputs.image(spec.start_image, cover=(spec.width, spec.height))
    elements = inputs.elements(spec.elements)
    composed = bool(elements) and engine.capabilities.max_references == 0
    if composed:
        if composer is None:
            raise ExecutionError("elements need an image engine to compose the first frame")
        start = _compose_keyframe(composer, spec, start, elements)
    shots = [(video_prompt(s.prompt) if elements else s.prompt, s.duration_s) for s in spec.shots]
    frame_parts: list[npt.NDArray[np.uint8]] = []
    audio_parts: list[npt.NDArray[np.float32] | None] = []
    shot_info: list[Facts] = []
    rate = 0
    for index, (prompt, seconds) in enumerate(shots):
        last = index == len(shots) - 1
        job = VideoJob(
            prompt=prompt,
            negative_prompt=spec.negative_prompt,
            start_image=start,
            end_image=(
                inputs.image(spec.end_image, cover=(spec.width, spec.height))
                if spec.end_image and last
                else None
            ),
            width=spec.width,
            height=spec.height,
            num_frames=seconds * fps,
            fps=fps,
            cfg_scale=spec.cfg_scale,
            generate_audio=audio_on,
            elements=() if composed else elements,
            seed=(seed + index) % 2**32,  # each shot its own noise, from the one reported seed
        )
        out.phase("denoising")
        result = _checked(engine.generate(job, _scaled(progress, index, len(shots))))
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
        shot_info.append(_facts(result.info))
    has_audio = audio_on and all(part is not None for part in audio_parts)
    all_audio = join_audio(audio_parts, rate) if has_audio else None
    all_frames = frame_parts[0] if len(frame_parts) == 1 else np.concatenate(frame_parts)
    path = out.blobs.scratch(".mp4")
    try:
        out.phase("encoding")
        # A cancel still stops the job while it encodes (seconds for a long 1080p clip).
        encode_mp4(path, all_frames, fps, all_audio, rate, check=lambda: progress(1.0))
        key = f"{out.prefix}/output.mp4"
        out.phase("storing")
        out.blobs.put_file(key, path)
    finally:
        path.unlink(missing_ok=True)
    meta: Facts = {
        "width": spec.width,
        "height": spec.height,
        "fps": fps,
        "frames": len(all_frames),
        "duration": len(all_frames) / fps,
        "has_audio": all_audio is not None,
        "shots": len(shots),
        "seed": seed,
    }
    if composed:
        meta["composed_keyframe"] = True
    if spec.audio_requested and not spec.generate_audio:
        meta["audio_honoured"] = False  # the engine has no audio: not delivered, not charged
    if not engine.capabilities.honours_cfg:
        meta["cfg_scale_honoured"] = False
    if not engine.capabilities.honours_negative_prompt:
        meta["negative_prompt_honoured"] = False
    meta.update(_shot_meta(shot_info, [len(part) for part in frame_parts], meta))
    return key, "video/mp4", meta


def _shot_meta(shot_info: list[Facts], shot_frames: list[int], meta: Facts) -> Facts:
    """The engine's facts for ``x-output-metadata``: one shot's as they are; for several, the
    facts every shot shares, each shot's own under ``shot_info``, and the end keyframe counted
    in the whole video's frames."""
    if len(shot_info) == 1:
        return {k: v for k, v in shot_info[0].items() if k not in meta}
    first, *rest = shot_info
    shared = {k: v for k, v in first.items() if all(info.get(k) == v for info in rest)}
    facts: Facts = {k: v for k, v in shared.items() if k not in meta}
    facts["shot_info"] = list[JsonValue](shot_info)
    end_frame = shot_info[-1].get("end_image_frame")
    if isinstance(end_frame, int):
        facts["end_image_frame"] = sum(shot_frames[:-1]) + end_frame
    return facts


def _compose_keyframe(
    composer: ImageToImageEngine,
    spec: VideoSpec,
    start: Image.Image,
    elements: tuple[Element, ...],
) -> Image.Image:
    """The start image with the elements composed in, at the video's size."""
    counts = [len(e.references) for e in elements]
    job = ImageJob(
        prompt=reference_prompt(spec.prompt or "the scene", counts),
        image=start,
        width=spec.width,
        height=spec.height,
        elements=elements,
        seed=spec.seed,
    )
    return conform_image(composer.generate(job, lambda _p: None).image, job.width, job.height)


def _image(
    engine: ImageToImageEngine,
    spec: ImageSpec,
    inputs: Inputs,
    out: _Out,
    progress: ProgressFn,
) -> tuple[str, str, Facts]:
    elements = inputs.elements(spec.elements)
    job = ImageJob(
        prompt=reference_prompt(spec.prompt, [len(e.references) for e in elements]),
        image=inputs.image(spec.image, cover=(spec.width, spec.height)),
        width=spec.width,
        height=spec.height,
        elements=elements,
        seed=spec.seed,
    )
    out.phase("denoising")
    result = engine.generate(job, progress)
    image = conform_image(result.image, job.width, job.height)
    fmt = spec.output_format
    key = f"{out.prefix}/output.{fmt}"
    out.phase("encoding")
    data = encode_image(image, fmt)
    out.phase("storing")
    out.blobs.put_bytes(key, data)
    meta: Facts = {"width": job.width, "height": job.height, "format": fmt}
    meta.update({k: v for k, v in _facts(result.info).items() if k not in meta})
    return key, IMAGE_MIME[fmt], meta
