"""One job inside the worker: inputs → engine → conform to the contract → encode → output in
the storage. Runs in the worker process only (engines import torch).

A video's frames flow from the engine's decoder through the conform step into the encoder a
chunk at a time (the encoder on its own thread), so memory does not grow with the duration."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import replace

import numpy as np
from PIL import Image
from pydantic import JsonValue, TypeAdapter, ValidationError

from kinema.engines.base import (
    Element,
    Engine,
    ImageJob,
    ImageToImageEngine,
    ImageToVideoEngine,
    Task,
    VideoJob,
    VideoOutput,
)
from kinema.engines.plan import reference_prompt, video_prompt
from kinema.engines.speech import VoiceEngine
from kinema.errors import KinemaError
from kinema.jobs.spec import ElementInputs, ImageSpec, VideoSpec
from kinema.media.conform import conform_audio, conform_frames, conform_image, fade_cuts
from kinema.media.encoding import EncoderSettings
from kinema.media.images import IMAGE_MIME, decode_image, encode_image
from kinema.media.video import Mp4Writer
from kinema.runners.meter import Meter, Report
from kinema.runners.protocol import Phase, RunResult, RunTask
from kinema.runners.voicing import Voicing, VoicingError, open_voicing, spoken_prompt
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
    report: Report,
    phase: Callable[[Phase], None] = lambda _phase: None,
    encoder: EncoderSettings | None = None,
    speech: VoiceEngine | None = None,
) -> RunResult:
    """Run one job and store its output under ``outputs/<job id>/``. ``report`` hears the
    progress (overall, and within the phase) and may raise to stop the run; ``phase`` hears
    each phase as it begins. ``encoder``: how video is encoded (the worker's settings;
    the defaults when None). ``speech``: the engine that speaks a video's ``voice_ids``."""
    spec = task.spec
    kind = Task(spec.task)
    engine = engines.get(kind)
    if engine is None:
        raise ExecutionError(f"no engine is loaded for {kind.value}")
    inputs = Inputs(blobs, task.inline)
    started = time.perf_counter()
    out = _Out(blobs, f"outputs/{task.job_id}")
    shares = engine.capabilities.phase_shares
    if isinstance(spec, VideoSpec):
        assert isinstance(engine, ImageToVideoEngine)
        composer = engines.get(Task.IMAGE_TO_IMAGE)
        assert composer is None or isinstance(composer, ImageToImageEngine)
        meter = Meter(shares, report, phase, [s.duration_s * spec.fps for s in spec.shots])
        encoding = encoder or EncoderSettings()
        try:
            voicing = open_voicing(spec.voice_references, engine, speech, blobs)
            key, content_type, meta = _video(
                engine, spec, inputs, out, meter, encoding, composer, voicing
            )
        except VoicingError as exc:
            raise ExecutionError(str(exc)) from exc
    else:
        assert isinstance(engine, ImageToImageEngine)
        key, content_type, meta = _image(engine, spec, inputs, out, Meter(shares, report, phase))
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
    """Where a run's output goes."""

    def __init__(self, blobs: Blobs, prefix: str) -> None:
        self.blobs = blobs
        self.prefix = prefix


def _checked(result: VideoOutput, shot: int, audio_on: bool) -> VideoOutput:
    """An engine's output that the contract can be made from (an engine bug otherwise)."""
    if audio_on and result.audio is None:
        raise ExecutionError(f"the engine made no audio for shot {shot + 1} though asked to")
    if result.audio is not None and not np.isfinite(result.audio).all():
        raise ExecutionError("the engine produced audio with NaN or infinite samples")
    return result


def _video(
    engine: ImageToVideoEngine,
    spec: VideoSpec,
    inputs: Inputs,
    out: _Out,
    meter: Meter,
    encoder: EncoderSettings,
    composer: ImageToImageEngine | None = None,
    voicing: Voicing | None = None,
) -> tuple[str, str, Facts]:
    """One generation per shot (hard cuts), each shot's frames conformed to the contract size
    and its exact frame count and encoded as its engine decodes them (the whole clip is never
    held); audio joined with short fades at the cuts. Elements, for a video engine that takes
    no reference images, are first composed into the start frame by the image engine. With
    voices, each shot's script is spoken first and the video follows that track."""
    fps, audio_on, seed = spec.fps, spec.generate_audio, spec.seed
    meter.begin("loading")
    start = inputs.image(spec.start_image, cover=(spec.width, spec.height))
    elements = inputs.elements(spec.elements)
    composed = bool(elements) and engine.capabilities.max_references == 0
    if composed:
        if composer is None:
            raise ExecutionError("elements need an image engine to compose the first frame")
        start = _compose_keyframe(composer, spec, start, elements)
    end = None
    if spec.end_image:
        end = inputs.image(spec.end_image, cover=(spec.width, spec.height))
    shots = [(video_prompt(s.prompt) if elements else s.prompt, s.duration_s) for s in spec.shots]
    shot_info: list[Facts] = []
    shot_frames: list[int] = []
    path = out.blobs.scratch(".mp4")
    writer: Mp4Writer | None = None
    try:
        for index, (prompt, seconds) in enumerate(shots):
            last = index == len(shots) - 1
            job = VideoJob(
                prompt=prompt,
                negative_prompt=spec.negative_prompt,
                start_image=start,
                end_image=end if last else None,
                width=spec.width,
                height=spec.height,
                num_frames=seconds * fps,
                fps=fps,
                cfg_scale=spec.cfg_scale,
                generate_audio=audio_on,
                elements=() if composed else elements,
                seed=(seed + index) % 2**32,  # each shot its own noise, from the one reported seed
            )
            meter.begin("denoising", index)
            if voicing is not None:
                track = voicing.track(
                    spec.shots[index].script,
                    seconds,
                    start_s=sum(shot_frames) / fps,  # the shots before this one
                    seed=job.seed or 0,
                    after_line=meter.check,
                )
                job = replace(job, prompt=spoken_prompt(job.prompt), speech=track)
            result = _checked(engine.generate(job, meter.at), index, audio_on)
            if writer is None:
                rate = result.sample_rate if audio_on else None
                writer = Mp4Writer(
                    path,
                    width=spec.width,
                    height=spec.height,
                    fps=fps,
                    audio_rate=rate,
                    encoder=encoder,
                    check=meter.check,
                )
            _stream_shot(writer, result, job, meter, index, len(shots))
            shot_info.append(_facts(result.info))
            shot_frames.append(job.num_frames)
        assert writer is not None  # a spec has at least one shot
        meter.begin("encoding")
        writer.close()
        key = f"{out.prefix}/output.mp4"
        meter.begin("storing")
        out.blobs.put_file(key, path)
        meter.done()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    finally:
        path.unlink(missing_ok=True)
    frames = sum(shot_frames)
    meta: Facts = {
        "width": spec.width,
        "height": spec.height,
        "fps": fps,
        "frames": frames,
        "duration": frames / fps,
        "has_audio": audio_on,
        "shots": len(shots),
        "seed": seed,
        "video_encoder": writer.codec,
    }
    if composed:
        meta["composed_keyframe"] = True
    if spec.audio_requested and not spec.generate_audio:
        meta["audio_honoured"] = False  # the engine has no audio: not delivered, not charged
    if not engine.capabilities.honours_cfg:
        meta["cfg_scale_honoured"] = False
    if not engine.capabilities.honours_negative_prompt:
        meta["negative_prompt_honoured"] = False
    if voicing is not None:
        meta.update(_facts(voicing.facts()))
    meta.update(_shot_meta(shot_info, shot_frames, meta))
    return key, "video/mp4", meta


def _stream_shot(
    writer: Mp4Writer, result: VideoOutput, job: VideoJob, meter: Meter, index: int, shots: int
) -> None:
    """One shot into the writer: its audio (conformed to the shot, faded at the cuts) first,
    then its frames, conformed chunk by chunk as the engine decodes them."""
    if result.audio is not None and job.generate_audio:
        audio = conform_audio(result.audio, result.sample_rate, job.num_frames / job.fps)
        writer.write_audio(fade_cuts(audio, result.sample_rate, index, shots))
    meter.begin("decoding", index)
    chunks = conform_frames(
        result.frames,
        result.fps,
        width=job.width,
        height=job.height,
        num_frames=job.num_frames,
        fps=job.fps,
        resize=False,  # the writer scales in its YUV conversion
    )
    done = 0
    try:
        for chunk in chunks:
            writer.write_frames(chunk)
            done += len(chunk)
            meter.at(done / job.num_frames)
    finally:
        result.frames.close()


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
    meter: Meter,
) -> tuple[str, str, Facts]:
    meter.begin("loading")
    elements = inputs.elements(spec.elements)
    job = ImageJob(
        prompt=reference_prompt(spec.prompt, [len(e.references) for e in elements]),
        image=inputs.image(spec.image, cover=(spec.width, spec.height)),
        width=spec.width,
        height=spec.height,
        elements=elements,
        seed=spec.seed,
    )
    meter.begin("denoising")
    result = engine.generate(job, meter.at)
    image = conform_image(result.image, job.width, job.height)
    fmt = spec.output_format
    key = f"{out.prefix}/output.{fmt}"
    meter.begin("encoding")
    data = encode_image(image, fmt)
    meter.begin("storing")
    out.blobs.put_bytes(key, data)
    meter.done()
    meta: Facts = {"width": job.width, "height": job.height, "format": fmt}
    meta.update({k: v for k, v in _facts(result.info).items() if k not in meta})
    return key, IMAGE_MIME[fmt], meta
