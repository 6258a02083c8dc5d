"""Engines benchmark: the production presets at real size with random weights, on one GPU.

For each preset: build random weights from the shipped real configs (kinema.engines.realsize) →
load them through the preset's own loader (the `from_pretrained` path real weights take) → one
warm-up call (9 frames for video) → one timed generation at production settings, its frames read
to the end (the streaming VAE decode). Records build, load and generation wall time (and the
decode's share), peak GPU memory (torch.cuda.max_memory_allocated) in the denoising and in the
decode, transformer forward passes per denoising step and steps.

- ltx2.5-distilled: 5 s (or --duration 15) 1920×1080 16:9 image → video with audio.
- ltx2.5-quality (--quality, or --preset): the same clip with classifier-free guidance.
- flux2-klein-4b: a 1024×576 (1K 16:9) image edit with 2 reference images.
- qwen-image-edit (--preset): the same edit (3 input images), 40 steps with true CFG (two
  transformer passes a step).

Weights load from disk when --models-dir has room (`--load disk`); otherwise (`--load memory`,
what `auto` picks on a 64 GiB disk for LTX-2.5's ~71 GB) the transformer and text encoder are built
in GPU memory and handed to the same loader's `from_pretrained` call, everything else from disk.

Without CUDA it refuses, unless --smoke: the same code path with tiny configs on the CPU (tests);
qwen-image-edit then also runs 2 steps with 64² input-image areas (SMOKE_QWEN_*).
Prints a table and writes JSON (default bench/results/engines.json). Bounded by --deadline.
Usage: python bench/engines.py [--preset NAME ...] [--quality] [--duration 5|15] [--offload]
       [--vae-tiling] [--models-dir DIR] [--load auto|disk|memory] [--smoke] [--out PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import json
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from kinema.engines import realsize
from kinema.engines.base import (
    Element,
    EngineCancelled,
    ImageJob,
    SpeechTrack,
    Task,
    VideoJob,
)
from kinema.engines.registry import LoadOptions, get_preset, load_engine

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PRESETS = ("ltx2.5-distilled", "flux2-klein-4b")
IN_MEMORY = ("transformer", "text_encoder")  # the two components that do not fit a 64 GiB disk
DISK_MARGIN = 1.1
SMOKE_QWEN_STEPS, SMOKE_QWEN_AREAS = 2, (64 * 64, 64 * 64)
"""--smoke settings of qwen-image-edit: its 40 steps and the pipeline's fixed 384² / 1024² input
areas (3 × 4,096 condition tokens) are settings, not configs, and take minutes on a CPU."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--preset", action="append", choices=sorted(realsize.LAYOUTS))
    p.add_argument("--quality", action="store_true", help="also run ltx2.5-quality")
    p.add_argument("--duration", type=int, default=5, help="video seconds (5 or 15)")
    p.add_argument("--offload", action="store_true", help="model CPU offload")
    p.add_argument("--vae-tiling", action="store_true")
    p.add_argument(
        "--speech",
        action="store_true",
        help="the video follows a given speech track (voice_ids' audio-driven path)",
    )
    p.add_argument("--models-dir", type=Path, help="where weights are built (default: temp dir)")
    p.add_argument("--load", choices=("auto", "disk", "memory"), default="auto")
    p.add_argument("--smoke", action="store_true", help="tiny configs on CPU (tests)")
    p.add_argument("--deadline", type=float, default=3000.0, help="seconds for the whole run")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "engines.json")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.smoke and not torch.cuda.is_available():
        print(
            "bench/engines.py needs a CUDA GPU (real-size LTX-2.5 is ~70 GB of bf16 weights); "
            "none is visible. Use --smoke to run the same code path with tiny configs on CPU.",
            file=sys.stderr,
        )
        return 2
    presets = list(args.preset or DEFAULT_PRESETS)
    if args.quality and "ltx2.5-quality" not in presets:
        presets.append("ltx2.5-quality")
    deadline = time.monotonic() + args.deadline
    with _models_dir(args.models_dir) as models_dir:
        rows = []
        for name in presets:
            if time.monotonic() > deadline:
                rows.append({"preset": name, "error": "skipped: deadline reached"})
                continue
            try:
                rows.append(run_preset(name, args, models_dir, deadline))
            except (EngineCancelled, RuntimeError, OSError, ValueError) as exc:  # CUDA OOM too
                rows.append({"preset": name, "error": f"{type(exc).__name__}: {exc}"[:500]})
            _release()
    report = {"settings": _settings(args), "machine": _machine(), "results": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print_table(rows)
    print(f"\nwrote {args.out}")
    return 0 if all("error" not in row for row in rows) else 1


def run_preset(
    name: str, args: argparse.Namespace, models_dir: Path, deadline: float
) -> dict[str, Any]:
    device = "cpu" if args.smoke else "cuda"
    dtype = torch.float32 if args.smoke else torch.bfloat16
    layout = realsize.LAYOUTS[name]
    needed = sum(realsize.weights_bytes(name, dtype, args.smoke).values())
    # Both LTX-2.5 presets share one build; a memory-mode build lacks two folders, hence its name.
    load = _load_mode(args.load, models_dir / layout.family, needed)
    directory = models_dir / (layout.family if load == "disk" else f"{layout.family}-partial")
    row: dict[str, Any] = {"preset": name, "load": load, "weights_gb": round(needed / 1e9, 1)}

    started = time.perf_counter()
    skip = IN_MEMORY if load == "memory" else ()
    prebuilt = {c: realsize.build_component(layout, c, device, dtype, args.smoke) for c in skip}
    if args.offload:
        prebuilt = {c: m.to("cpu") for c, m in prebuilt.items()}
    realsize.build_weights(name, directory, device, dtype, args.smoke, skip=skip)
    row["build_s"] = round(time.perf_counter() - started, 1)

    options = LoadOptions(
        models_dir=models_dir,
        source=str(directory),
        device=device,
        dtype="float32" if args.smoke else "bfloat16",
        cpu_offload=args.offload,
        vae_tiling=args.vae_tiling,
    )
    started = time.perf_counter()
    with _inject(name, prebuilt), _smoke_settings(name, args.smoke):
        engine = load_engine(name, options)
    prebuilt.clear()
    row["load_s"] = round(time.perf_counter() - started, 1)

    job, warmup = make_jobs(get_preset(name).task, args)
    generate: Callable[..., Any] = engine.generate  # type: ignore[attr-defined]
    progress = _deadline_progress(deadline)
    started = time.perf_counter()
    _drain(generate(warmup, progress))
    row["warmup_s"] = round(time.perf_counter() - started, 1)
    _sync()
    if torch.cuda.is_available():
        row["peak_gpu_gb_load_warmup"] = round(torch.cuda.max_memory_allocated() / 1e9, 1)
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    output = generate(job, progress)
    _sync()
    denoised = time.perf_counter()
    if torch.cuda.is_available():
        row["peak_gpu_gb_denoise"] = round(torch.cuda.max_memory_allocated() / 1e9, 1)
        torch.cuda.reset_peak_memory_stats()
    _drain(output)  # a video's frames are decoded as they are read, a temporal tile at a time
    _sync()
    row["generate_s"] = round(time.perf_counter() - started, 2)
    row["decode_s"] = round(time.perf_counter() - denoised, 2)
    if torch.cuda.is_available():
        row["peak_gpu_gb_decode"] = round(torch.cuda.max_memory_allocated() / 1e9, 1)
    info = dict(output.info)
    steps = int(info["steps"])
    row.update(
        steps=steps,
        transformer_passes=info["transformer_passes"],
        passes_per_step=round(int(info["transformer_passes"]) / steps, 2),
        working_size=info.get("working_size"),
        rendered_frames=info.get("rendered_frames"),
        audio_driven=info.get("audio_driven", False),
        peak_gpu_gb=max(row.get("peak_gpu_gb_denoise", 0), row.get("peak_gpu_gb_decode", 0))
        if torch.cuda.is_available()
        else None,
    )
    return row


def _drain(output: Any) -> None:
    """Read a video's frames to the end (chunk by chunk, as the worker does)."""
    frames = getattr(output, "frames", None)
    if frames is not None:
        for _chunk in frames:
            pass


def make_jobs(task: Task, args: argparse.Namespace) -> tuple[Any, Any]:
    """The timed job at production settings and a short warm-up with the same shapes."""
    rng = np.random.default_rng(0)

    def image(width: int, height: int) -> Image.Image:
        return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))

    prompt = "A red fox walks through a snowy forest at dawn, golden light, birdsong."
    if task is Task.IMAGE_TO_VIDEO:
        width, height = (128, 64) if args.smoke else (1920, 1080)
        fps = 24
        frames = 9 if args.smoke else args.duration * fps
        start = image(width, height)
        track = speech_track(frames / fps) if args.speech else None
        warm = speech_track(9 / fps) if args.speech else None
        job = VideoJob(prompt, "", start, width, height, frames, fps, seed=0, speech=track)
        return job, VideoJob(prompt, "", start, width, height, 9, fps, seed=0, speech=warm)
    width, height = (128, 64) if args.smoke else (1024, 576)
    references = (Element(frontal=image(width, height), references=(image(width, height),)),)
    job = ImageJob(prompt, image(width, height), width, height, elements=references, seed=0)
    return job, job


def speech_track(seconds: float, rate: int = 24_000) -> SpeechTrack:
    """Speech-like sound for ``seconds``: a 140 Hz voice with harmonics, in 4 syllables a second
    with pauses (what the speech engine hands the video engine; its content does not change the
    cost, its length does)."""
    t = np.arange(round(seconds * rate)) / rate
    voice = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 6))
    syllables = np.clip(np.sin(2 * np.pi * 2 * t), 0, None) * (t % 2.5 < 2.0)
    return SpeechTrack((0.2 * voice * syllables).astype(np.float32), rate)


def print_table(rows: list[dict[str, Any]]) -> None:
    columns = (
        "preset", "load", "weights_gb", "build_s", "load_s", "warmup_s", "generate_s",
        "steps", "passes_per_step", "peak_gpu_gb", "rendered_frames",
    )  # fmt: skip
    print(" | ".join(columns))
    print(" | ".join("---" for _ in columns))
    for row in rows:
        if "error" in row:
            print(f"{row['preset']} | error: {row['error']}")
        else:
            print(" | ".join(str(row.get(c, "")) for c in columns))


def _load_mode(requested: str, directory: Path, needed: int) -> str:
    if requested != "auto":
        return requested
    if (directory / realsize.MARKER).is_file():
        return "disk"
    directory.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(directory.parent).free
    return "disk" if free > needed * DISK_MARGIN else "memory"


@contextlib.contextmanager
def _inject(preset: str, prebuilt: dict[str, torch.nn.Module]) -> Iterator[None]:
    """Hand prebuilt components to the loader's own ``from_pretrained`` call (memory mode)."""
    if not prebuilt:
        yield
        return
    module = importlib.import_module(get_preset(preset).loader.split(":", 1)[0])
    original = module.load_pipeline

    def load_pipeline(
        pipeline_class: Any, source: Any, options: LoadOptions, **components: Any
    ) -> Any:
        class WithPrebuilt(pipeline_class):  # type: ignore[misc,valid-type]
            @classmethod
            def from_pretrained(cls, *args: Any, **kwargs: Any) -> Any:
                return pipeline_class.from_pretrained(*args, **kwargs, **prebuilt)

        return original(WithPrebuilt, source, options, **components)

    module.load_pipeline = load_pipeline
    try:
        yield
    finally:
        module.load_pipeline = original


@contextlib.contextmanager
def _smoke_settings(preset: str, smoke: bool) -> Iterator[None]:
    """With --smoke, qwen-image-edit loads with the SMOKE_QWEN_* steps and image areas."""
    if not smoke or preset != "qwen-image-edit":
        yield
        return
    from kinema.engines import qwen

    original = qwen.EDIT_2511_SETTINGS
    qwen.EDIT_2511_SETTINGS = dataclasses.replace(
        original, steps=SMOKE_QWEN_STEPS, image_areas=SMOKE_QWEN_AREAS
    )
    try:
        yield
    finally:
        qwen.EDIT_2511_SETTINGS = original


def _deadline_progress(deadline: float) -> Callable[[float], None]:
    def progress(_fraction: float) -> None:
        if time.monotonic() > deadline:
            raise EngineCancelled("deadline reached")

    return progress


@contextlib.contextmanager
def _models_dir(path: Path | None) -> Iterator[Path]:
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="kinema-realsize-") as tmp:
        yield Path(tmp)


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _release() -> None:
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "duration_s": args.duration,
        "offload": args.offload,
        "vae_tiling": args.vae_tiling,
        "smoke": args.smoke,
        "load": args.load,
    }


def _machine() -> dict[str, Any]:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "gpu": gpu,
        "gpu_memory_gb": round(torch.cuda.get_device_properties(0).total_memory / 1e9, 1)
        if gpu
        else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"),
    }


if __name__ == "__main__":
    sys.exit(main())
