"""Engine overhead: a Kinema v1 request through the whole stack vs the same tiny diffusers
pipeline called directly and encoded with the ffmpeg command line, per endpoint; and where a
Kinema run's time goes, phase by phase, per preset (the progress shares of the presets).

1. **kinema**: ``kinema serve --preset tiny`` on 127.0.0.1 (its own data dir, one worker per
   pool), a key; v1 requests, each timed by the client from the first byte sent to the last
   byte of the answer (the MP4 or PNG itself):
   - ``kling-3-standard-image2video``: a 1280×720 PNG start image, 16:9, ``--duration`` s with
     audio, no elements → a 1920×1080 MP4 (H.264 + AAC);
   - ``kling-3-image2image``: the same PNG, 1K 1:1 → a 1024×1024 PNG.
2. **direct**: the same weights loaded with diffusers' own ``from_pretrained`` in this process;
   per request the same pipeline call (size, frames, steps, seed, guidance off), then what a
   user would do — the video's frames piped raw to ``ffmpeg`` (scaled and cropped to
   1920×1080, libx264 ``veryfast`` CRF 18, AAC 192 kb/s from a WAV of the audio,
   ``+faststart``), the image resized to 1024×1024 with Pillow and saved as PNG.
3. **phases**: Kinema's worker code (``kinema.runners.execute``) in this process on each tiny and
   static preset, one warm-up, one timed run: seconds per phase and its share — the figures the
   presets' ``PhaseShares`` come from — beside the shares the preset declares and the largest
   gap. Per endpoint, ``worker_s`` is this run's total for the preset ``--preset tiny`` serves
   it with, so ``kinema_s - worker_s`` is what the rest of the stack adds (HTTP, the body, the
   queue, storing the output and answering with it).

Per endpoint a warm-up of each, then ``--requests`` back-to-back pairs, a Kinema request and a
direct call, the first of the pair alternating (the server idles while the direct call runs):
the ratio is the median of the pairs' kinema / direct, since the machine's load moves between
pairs (target ≤ 1.05 where the pipeline dominates). Prints
tables and writes JSON (default bench/results/engine_overhead.json). Needs ``ffmpeg`` on PATH.
Bounded: every request by 300 s, the whole run by ``--deadline``.
Usage: python bench/engine_overhead.py [--requests 5] [--duration 5] [--parts pairs phases]
       [--smoke] [--out PATH]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import io
import itertools
import json
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kinema.engines.base import Task  # noqa: E402
from kinema.engines.registry import LoadOptions, get_preset, load_engine  # noqa: E402
from kinema.engines.tiny import build_tiny_flux2_klein, build_tiny_ltx2  # noqa: E402
from kinema.jobs.spec import ShotSpec  # noqa: E402
from kinema.runners.execute import execute  # noqa: E402
from kinema.runners.protocol import RunTask  # noqa: E402
from kinema.storage.blobs import LocalBlobs  # noqa: E402
from tests.fixtures.served import Server  # noqa: E402
from tests.fixtures.specs import image_spec, video_spec  # noqa: E402

VIDEO_SLUG, IMAGE_SLUG = "kling-3-standard-image2video", "kling-3-image2image"
PROMPT = "a red kite rises over a green hill"
SEED = 7
FILL = "force_original_aspect_ratio=increase"
PHASES = ("loading", "denoising", "decoding", "encoding", "storing")
VIDEO_PRESETS = ("tiny-ltx2", "tiny-ltx2-two-stage", "tiny-ltx2-quality", "static-video")
IMAGE_PRESETS = ("tiny-flux2-klein", "tiny-qwen-image-edit", "static-image")
SERVED = {VIDEO_SLUG: "tiny-ltx2", IMAGE_SLUG: "tiny-flux2-klein"}
"""The preset ``--preset tiny`` serves each endpoint with."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--requests", type=int, default=5, help="timed pairs per endpoint")
    p.add_argument("--duration", type=int, default=5, help="video seconds")
    p.add_argument("--smoke", action="store_true", help="1 request of a 3 s video (tests)")
    p.add_argument(
        "--parts",
        nargs="+",
        choices=("pairs", "phases"),
        default=["pairs", "phases"],
        help="pairs: Kinema vs direct per endpoint; phases: each preset's time by phase",
    )
    p.add_argument("--deadline", type=float, default=1800.0, help="seconds for the whole run")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "engine_overhead.json")
    return p.parse_args(argv)


def source_png() -> bytes:
    """A 1280×720 picture with structure (gradients and a disc), the same in every part."""
    y, x = np.mgrid[0:720, 0:1280]
    rgb = np.stack(
        [x * 255 // 1279, y * 255 // 719, ((x - 640) ** 2 + (y - 360) ** 2 < 200**2) * 200], -1
    )
    buf = io.BytesIO()
    Image.fromarray(rgb.astype(np.uint8)).save(buf, "PNG")
    return buf.getvalue()


# 1. Kinema: the whole stack -----------------------------------------------------------------


@contextlib.contextmanager
def kinema_calls(
    models: Path, args: argparse.Namespace, png: bytes
) -> Iterator[dict[str, Callable[[], None]]]:
    """``kinema serve --preset tiny`` on 127.0.0.1, ready; per endpoint a call that sends one
    v1 request and reads the whole answer (the MP4 or PNG)."""
    data = Path(tempfile.mkdtemp(prefix="kinema-bench-"))
    server = Server(data, "tiny")
    server.env["KINEMA_ENGINES__MODELS_DIR"] = str(models)
    server.key = server.cli("keys", "create", "--name", "bench", "--credits", "100000")
    server.start()
    headers = {"x-api-key": server.key}
    image = base64.b64encode(png).decode()
    bodies = {
        VIDEO_SLUG: {
            "start_image_url": image,
            "prompt": PROMPT,
            "duration": str(args.duration),
            "aspect_ratio": "16:9",
            "generate_audio": True,
            "seed": SEED,
        },
        IMAGE_SLUG: {"image_url": image, "prompt": PROMPT, "resolution": "1K", "seed": SEED},
    }
    try:
        with httpx.Client(base_url=server.url, timeout=300) as client:
            _wait_ready(client)

            def call(slug: str) -> Callable[[], None]:
                def send() -> None:
                    r = client.post(f"/v1/{slug}", json=bodies[slug], headers=headers)
                    if r.status_code != 200:
                        raise RuntimeError(f"{slug}: {r.status_code} {r.text[:300]}")

                return send

            yield {slug: call(slug) for slug in bodies}
    finally:
        server.stop()
        shutil.rmtree(data, ignore_errors=True)


def _wait_ready(client: httpx.Client) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if client.get("/readyz").status_code == 200:
            return
        time.sleep(0.5)
    raise RuntimeError("the server's engines did not get ready")


# 2. Direct: diffusers + the ffmpeg CLI ------------------------------------------------------


def direct_calls(
    models: Path, args: argparse.Namespace, png: bytes
) -> dict[str, Callable[[], None]]:
    """The same tiny pipelines loaded with diffusers' own ``from_pretrained`` in this process;
    per endpoint a call that generates and encodes as a user of diffusers would."""
    from diffusers.pipelines.flux2.pipeline_flux2_klein import Flux2KleinPipeline
    from diffusers.pipelines.ltx2.pipeline_ltx2_condition import (
        LTX2ConditionPipeline,
        LTX2VideoCondition,
    )

    start = Image.open(io.BytesIO(png)).convert("RGB")
    ltx = LTX2ConditionPipeline.from_pretrained(str(models / "tiny-ltx2"))
    ltx.set_progress_bar_config(disable=True)
    flux = Flux2KleinPipeline.from_pretrained(str(models / "tiny-flux2-klein"))
    flux.set_progress_bar_config(disable=True)
    frames = args.duration * 24
    grid = -(-(frames - 1) // 8) * 8 + 1  # LTX-2's 8k+1 frames covering the duration

    def video() -> None:
        # The tiny preset's working size for 16:9 (long side 64 on a 32 grid), its 2 steps.
        condition = LTX2VideoCondition(frames=start.resize((64, 32)), index=0, crf=0)
        out, audio = ltx(
            prompt=PROMPT,
            conditions=[condition],
            width=64,
            height=32,
            num_frames=grid,
            frame_rate=24.0,
            num_inference_steps=2,
            guidance_scale=1.0,
            max_sequence_length=16,
            generator=torch.Generator().manual_seed(SEED),
            output_type="np",
            return_dict=False,
        )
        rate = int(ltx.vocoder.config.output_sampling_rate)
        ffmpeg_encode(out[0], audio[0].float().numpy(), rate, args.duration)

    def image() -> None:
        out = flux(
            image=[start.resize((64, 64))],
            prompt=PROMPT,
            width=64,
            height=64,
            num_inference_steps=2,
            guidance_scale=1.0,
            max_sequence_length=64,
            text_encoder_out_layers=(1,),
            generator=torch.Generator().manual_seed(SEED),
        ).images[0]
        buf = io.BytesIO()
        out.resize((1024, 1024), Image.Resampling.BICUBIC).save(buf, "PNG")

    return {VIDEO_SLUG: video, IMAGE_SLUG: image}


def ffmpeg_encode(frames: np.ndarray, audio: np.ndarray, rate: int, seconds: int) -> None:
    """``frames`` (``[T, H, W, 3]`` floats 0..1) and ``audio`` (``[C, S]``) to an MP4 with the
    ffmpeg command line, the way a user of diffusers would: cropped and scaled to 1920×1080,
    trimmed to ``seconds``."""
    raw = np.rint(np.clip(frames, 0, 1) * 255).astype(np.uint8)
    height, width = raw.shape[1:3]
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "audio.wav"
        pcm = (np.clip(audio, -1, 1).T * 32767).astype(np.int16)
        with wave.open(str(wav), "wb") as w:
            w.setnchannels(pcm.shape[1])
            w.setsampwidth(2)
            w.setframerate(rate)
            w.writeframes(pcm.tobytes())
        command = [
            "ffmpeg", "-v", "error", "-y",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", "24", "-i", "-",
            "-i", str(wav),
            "-vf", f"scale=1920:1080:{FILL}:flags=bicubic,crop=1920:1080",
            "-frames:v", str(seconds * 24), "-t", str(seconds),
            "-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-pix_fmt", "yuv420p",
            "-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709",
            "-c:a", "aac", "-b:a", "192k", "-ar", "48000",
            "-movflags", "+faststart", str(Path(tmp) / "out.mp4"),
        ]  # fmt: skip
        subprocess.run(command, input=raw.tobytes(), check=True, timeout=300)


def paired(
    models: Path, args: argparse.Namespace, png: bytes
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Per endpoint, a warm-up of each, then ``--requests`` back-to-back pairs (which one goes
    first alternates), so that both sides of a pair see the same load on the machine. The
    server is idle while the direct call runs (its workers wait on their queue)."""
    kinema: dict[str, list[float]] = {}
    direct: dict[str, list[float]] = {}
    with kinema_calls(models, args, png) as served:
        local = direct_calls(models, args, png)
        for slug in (VIDEO_SLUG, IMAGE_SLUG):
            served[slug]()
            local[slug]()
            kinema[slug], direct[slug] = [], []
            for index in range(args.requests):
                order = [(served, kinema), (local, direct)]
                for calls, times in order if index % 2 == 0 else order[::-1]:
                    started = time.perf_counter()
                    calls[slug]()
                    times[slug].append(time.perf_counter() - started)
    return kinema, direct


# 3. Phases: Kinema's worker code, per preset ------------------------------------------------


def phase_times(models: Path, args: argparse.Namespace, png: bytes) -> list[dict[str, Any]]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        blobs = LocalBlobs(Path(tmp))
        options = LoadOptions(models_dir=models)
        for preset in (*VIDEO_PRESETS, *IMAGE_PRESETS):
            engine = load_engine(preset, options)
            task = Task.IMAGE_TO_VIDEO if preset in VIDEO_PRESETS else Task.IMAGE_TO_IMAGE
            times: dict[str, float] = {}
            for run in range(2):  # a warm-up, then the timed run
                times = _phased_run(engine, task, preset, args, png, blobs, f"{preset}-{run}")
            total = sum(times.values())
            row: dict[str, Any] = {"preset": preset, "total_s": round(total, 3)}
            declared = dataclasses.asdict(get_preset(preset).capabilities.phase_shares)
            for phase in PHASES:
                row[f"{phase}_s"] = round(times.get(phase, 0.0), 3)
                row[f"{phase}_share"] = round(times.get(phase, 0.0) / total, 3)
            row["declared_shares"] = declared
            row["largest_gap"] = round(
                max(abs(row[f"{phase}_share"] - declared[phase]) for phase in PHASES), 3
            )
            rows.append(row)
            del engine
    return rows


def _phased_run(
    engine: Any, task: Task, preset: str, args: argparse.Namespace, png: bytes, blobs: Any, job: str
) -> dict[str, float]:
    key = f"inputs/{job}/00-image"
    if task is Task.IMAGE_TO_VIDEO:
        seconds = args.duration
        spec: Any = video_spec(
            job,
            preset=preset,
            duration_s=seconds,
            num_frames=seconds * 24,
            shots=(ShotSpec(prompt=PROMPT, duration_s=seconds),),
            start_image=key,
        )
    else:
        spec = image_spec(job, preset=preset, image=key)
    marks: list[tuple[str, float]] = []
    execute(
        {task: engine},
        RunTask(job_id=job, spec=spec, inline={key: png}),
        blobs,
        lambda _value, _within: None,
        lambda phase: marks.append((phase, time.perf_counter())),
    )
    marks.append(("end", time.perf_counter()))
    times: dict[str, float] = {}
    for (phase, at), (_next, until) in itertools.pairwise(marks):
        times[phase] = times.get(phase, 0.0) + until - at
    return times


# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.smoke:
        args.requests, args.duration = 1, 3
    if shutil.which("ffmpeg") is None:
        print(
            "bench/engine_overhead.py needs ffmpeg on PATH (apt-get install ffmpeg)",
            file=sys.stderr,
        )
        return 2
    torch.manual_seed(0)
    started = time.monotonic()
    models = Path(tempfile.mkdtemp(prefix="kinema-bench-models-"))
    try:
        build_tiny_ltx2(models / "tiny-ltx2")
        build_tiny_flux2_klein(models / "tiny-flux2-klein")  # the direct part loads these
        png = source_png()
        kinema, direct = paired(models, args, png) if "pairs" in args.parts else ({}, {})
        phases = phase_times(models, args, png) if "phases" in args.parts else []
    finally:
        shutil.rmtree(models, ignore_errors=True)
    endpoints = []
    in_process = {row["preset"]: row["total_s"] for row in phases}
    for slug in kinema:
        k, d = statistics.median(kinema[slug]), statistics.median(direct[slug])
        worker = in_process.get(SERVED[slug], float("nan"))
        ratios = [a / b for a, b in zip(kinema[slug], direct[slug], strict=True)]
        endpoints.append(
            {
                "endpoint": slug,
                "kinema_s": round(k, 3),
                "direct_s": round(d, 3),
                "ratio": round(statistics.median(ratios), 3),  # of the pairs
                "ratio_range": f"{min(ratios):.2f}-{max(ratios):.2f}",
                # The worker's code alone (part 3), and what the rest of the stack adds to it:
                # HTTP, the body, the queue, the output's storage and its answer.
                "worker_s": worker,
                "stack_s": round(k - worker, 3),
                "kinema_runs_s": [round(t, 3) for t in kinema[slug]],
                "direct_runs_s": [round(t, 3) for t in direct[slug]],
            }
        )
    report = {
        "bench": "engine_overhead",
        "machine": {"platform": platform.platform(), "cpus": _cpus(), "torch": torch.__version__},
        "settings": {"requests": args.requests, "duration_s": args.duration, "smoke": args.smoke},
        "endpoints": endpoints,
        "phases": phases,
        "wall_s": round(time.monotonic() - started, 1),
    }
    _print(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


def _print(report: dict[str, Any]) -> None:
    head = f"{'kinema s':>9} {'direct s':>9} {'ratio':>7} {'range':>10} {'worker s':>9}"
    print(f"\n{'endpoint':30} {head}")
    for row in report["endpoints"]:
        k, d, ratio, w = row["kinema_s"], row["direct_s"], row["ratio"], row["worker_s"]
        spread = row["ratio_range"]
        print(f"{row['endpoint']:30} {k:9.3f} {d:9.3f} {ratio:7.3f} {spread:>10} {w:9.3f}")
    header = "".join(f"{phase:>16}" for phase in PHASES)
    print(f"\n{'preset':22} {'total s':>8}{header}   declared shares (gap)")
    for row in report["phases"]:
        cells = "".join(
            f"{row[f'{phase}_s']:9.3f} ({row[f'{phase}_share']:4.0%})" for phase in PHASES
        )
        declared = "/".join(f"{row['declared_shares'][phase]:.2f}" for phase in PHASES)
        gap = row["largest_gap"]
        print(f"{row['preset']:22} {row['total_s']:8.3f}{cells}   {declared} ({gap:.2f})")


if __name__ == "__main__":
    sys.exit(main())
