"""Media-path benchmark: the streaming MP4 encoder against the ffmpeg command line, the conform
step per frame, the encoder's peak memory by clip length, and libx264's settings compared.

Frames are synthetic 1920×1080 but not flat: a moving colour gradient, a bicubic-smooth
texture and per-frame grain (``pan``: the texture drifts across the whole frame; ``still``: a
still background with one moving block, like most generated shots). Frame t is the same bytes
in every process. In one run:
  (a) wall time to encode 5 s and 15 s at 24 fps with kinema.media.video.Mp4Writer, fed 8-frame
      chunks as the worker feeds it, vs `ffmpeg` given the same rgb24 bytes on stdin with the
      same settings (libx264 preset and CRF, frame threads, BT.709 limited-range yuv420p,
      +faststart); run in back-to-back pairs, --repeats of them: the medians, and the ratio
      writer / ffmpeg as the median of the pairs' (with its range);
  (b) per frame, from an engine's frame to the yuv420p frame the encoder takes, at 1920×1080
      from LTX's 1920×1088 working size (a crop only), from half size and from the tiny
      presets' 64×32: the worker's path (conform crops, the writer scales in its YUV
      conversion, one swscale pass) vs scaling in conform first (bicubic on planar RGB, then
      the conversion at full size); one thread;
  (c) peak RSS growth (ru_maxrss, one subprocess per case so none shares a peak) of a process
      that makes 5 s or 15 s chunk by chunk into Mp4Writer, against one that makes the whole
      clip as one array and encodes it (the worker before streaming), and ffmpeg's own;
  (d) with --parts sweep: libx264 presets, threads and tunes on 48 frames of each clip: fps,
      Mbit/s and luma PSNR against the encoder's input (how the default preset was chosen).
Prints tables and writes JSON (default bench/results/media.json).
Usage: python bench/media.py [--durations 5 15] [--repeats 3] [--preset veryfast] [--crf 18]
       [--parts encode conform memory sweep] [--smoke] [--out PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt
from av.video.reformatter import ColorRange, Colorspace
from PIL import Image

from kinema.media.conform import _scale, crop_box
from kinema.media.encoding import EncoderSettings
from kinema.media.video import ENCODE_CHUNK, Mp4Writer, _video_frame, encode_mp4

ROOT = Path(__file__).resolve().parents[1]
FPS = 24
PAN = 256
Frames = npt.NDArray[np.uint8]


class Clip:
    """Synthetic frames at ``width``×``height``; :meth:`frame` is deterministic."""

    def __init__(self, width: int, height: int, motion: str = "pan", seed: int = 0) -> None:
        self.width, self.height, self.motion, self.seed = width, height, motion, seed
        rng = np.random.default_rng(seed)
        small = rng.integers(0, 256, ((height + PAN) // 8 + 1, (width + PAN) // 8 + 1, 3))
        size = (width + PAN, height + PAN)
        big = Image.fromarray(small.astype(np.uint8)).resize(size, Image.Resampling.BICUBIC)
        self.texture = np.asarray(big, dtype=np.float32) - 128
        x = np.linspace(0, 1, width, dtype=np.float32)[None, :, None]
        y = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
        self.phase = 2 * np.pi * (x * np.array([1, 1.5, 2], np.float32) + 0.7 * y)

    def frame(self, t: int) -> Frames:
        h, w = self.height, self.width
        gradient = 127.5 + 127.5 * np.sin(self.phase + np.float32(2 * np.pi * t / 48))
        grain = np.random.default_rng([self.seed, t]).integers(-2, 3, (h, w, 1), dtype=np.int8)
        image: npt.NDArray[np.floating[Any]]
        if self.motion == "pan":
            dx, dy = _bounce(3 * t), _bounce(2 * t)
            image = gradient * 0.7 + self.texture[dy : dy + h, dx : dx + w] * 0.4 + grain
        else:
            image = self.texture[:h, :w] * 0.6 + 128 + grain
            bh, bw = h * 3 // 8, w // 4
            top, left = min(h // 4 + 3 * t, h - bh), min(w // 5 + 8 * t, w - bw)
            block = (slice(top, top + bh), slice(left, left + bw))
            image[block] = gradient[block] * 0.8 + self.texture[:bh, :bw] * 0.3
        return np.clip(image, 0, 255).astype(np.uint8)

    def chunk(self, start: int, count: int) -> Frames:
        return np.stack([self.frame(t) for t in range(start, start + count)])


def _bounce(step: int) -> int:
    return abs(step % (2 * PAN) - PAN)


# (a) Mp4Writer vs the ffmpeg command line --------------------------------------------------


def encode_writer(
    frames: Frames, path: Path, encoder: EncoderSettings, size: tuple[int, int] | None = None
) -> float:
    """Encode ``frames`` at ``size`` (width, height; default theirs: the writer scales)."""
    started = time.perf_counter()
    width, height = size or (frames.shape[2], frames.shape[1])
    with Mp4Writer(
        path, width=width, height=height, fps=FPS, audio_rate=None, encoder=encoder
    ) as writer:
        for start in range(0, len(frames), ENCODE_CHUNK):
            writer.write_frames(frames[start : start + ENCODE_CHUNK])
    return time.perf_counter() - started


def ffmpeg_command(
    width: int,
    height: int,
    encoder: EncoderSettings,
    out: Path,
    size: tuple[int, int] | None = None,
) -> list[str]:
    scale = "" if size is None else f"{size[0]}:{size[1]}:flags=bicubic:"
    return [
        "ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", str(FPS),
        "-i", "-",
        "-vf", f"scale={scale}out_color_matrix=bt709:out_range=tv,format=yuv420p",
        "-c:v", "libx264", "-preset", encoder.preset, "-crf", str(encoder.crf),
        "-threads", str(encoder.threads), "-pix_fmt", "yuv420p",
        "-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709",
        "-color_range", "tv", "-movflags", "+faststart", str(out),
    ]  # fmt: skip


def encode_ffmpeg(
    frames: Frames, path: Path, encoder: EncoderSettings, size: tuple[int, int] | None = None
) -> float:
    height, width = frames.shape[1:3]
    started = time.perf_counter()
    command = ffmpeg_command(width, height, encoder, path, size)
    proc = subprocess.Popen(command, stdin=subprocess.PIPE)
    assert proc.stdin is not None
    for start in range(0, len(frames), ENCODE_CHUNK):
        proc.stdin.write(frames[start : start + ENCODE_CHUNK].data)
    proc.stdin.close()
    if proc.wait():
        raise RuntimeError(f"ffmpeg exited with {proc.returncode}")
    return time.perf_counter() - started


def compare(args: argparse.Namespace, encoder: EncoderSettings, work: Path) -> list[dict[str, Any]]:
    """Each duration at the output size; then the first duration from the tiny presets' 64×32,
    scaled to the output size by each (the writer in its YUV conversion, ffmpeg's scale filter
    bicubic), which is what a tiny engine's job encodes."""
    size = (args.width, args.height)
    cases = [(Clip(*size), seconds, None) for seconds in args.durations]
    cases.append((Clip(64, 32), args.durations[0], size))
    rows = []
    for clip, seconds, scaled in cases:
        frames = clip.chunk(0, seconds * FPS)
        ours, theirs = [], []
        for repeat in range(args.repeats):
            # Back to back, the first of the pair alternating: each pair sees the same load.
            if repeat % 2:
                theirs.append(encode_ffmpeg(frames, work / "ffmpeg.mp4", encoder, scaled))
            ours.append(encode_writer(frames, work / "writer.mp4", encoder, scaled))
            if not repeat % 2:
                theirs.append(encode_ffmpeg(frames, work / "ffmpeg.mp4", encoder, scaled))
        writer_s, ffmpeg_s = statistics.median(ours), statistics.median(theirs)
        ratios = [a / b for a, b in zip(ours, theirs, strict=True)]
        rows.append(
            {
                "source": f"{clip.width}x{clip.height}",
                "seconds": seconds,
                "frames": len(frames),
                "writer_s": round(writer_s, 2),
                "ffmpeg_s": round(ffmpeg_s, 2),
                "ratio": round(statistics.median(ratios), 3),  # of the pairs
                "ratio_range": f"{min(ratios):.2f}-{max(ratios):.2f}",
                "writer_fps": round(len(frames) / writer_s, 1),
                "writer_runs_s": [round(s, 2) for s in ours],
                "ffmpeg_runs_s": [round(s, 2) for s in theirs],
                "writer_mbit_s": _mbit_s(work / "writer.mp4", seconds),
                "ffmpeg_mbit_s": _mbit_s(work / "ffmpeg.mp4", seconds),
            }
        )
        del frames
    return rows


def _mbit_s(path: Path, seconds: float) -> float:
    return round(path.stat().st_size * 8 / seconds / 1e6, 1)


# (b) The conform step -------------------------------------------------------------------------


def conform_costs(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Per frame, from the engine's frame to the yuv420p frame the encoder takes: the worker's
    path (crop in conform; the writer scales in its YUV conversion, one swscale pass) against
    scaling in conform first (crop, bicubic on planar RGB, then the conversion at full size)."""
    width, height = args.width, args.height
    shape = (height, width, 3)
    sources = [(width, height + 8 * height // 1080), (width // 2, height // 2 + 4), (64, 32)]
    rows = []
    for src_w, src_h in sources:
        frame = Clip(src_w, src_h).frame(0)
        left, top, crop_w, crop_h = crop_box(src_w, src_h, width, height)
        crop = frame[top : top + crop_h, left : left + crop_w]
        resized = (crop_w, crop_h) != (width, height)
        reps = 3 if args.smoke else 20

        costs = {}
        for name in ("writer", "conform"):
            _to_encoder(crop, shape, name)  # warm swscale's context
            started = time.perf_counter()
            for _ in range(reps):
                out = _to_encoder(crop, shape, name)
            costs[name] = (time.perf_counter() - started) / reps
            assert (out.width, out.height) == (width, height)
        rows.append(
            {
                "source": f"{src_w}x{src_h}",
                "target": f"{width}x{height}",
                "step": "crop + bicubic" if resized else "crop",
                "ms_writer_scales": round(costs["writer"] * 1000, 2),
                "ms_conform_scales": round(costs["conform"] * 1000, 2),
                "ratio": round(costs["writer"] / costs["conform"], 2),
            }
        )
    return rows


def _to_encoder(crop: npt.NDArray[np.uint8], shape: tuple[int, int, int], path: str) -> Any:
    height, width = shape[:2]
    if path == "conform" and crop.shape != shape:
        return _video_frame(_scale(crop, width, height), 0, 24, shape)
    return _video_frame(np.ascontiguousarray(crop), 0, 24, shape)


# (c) Peak memory, one process per case ---------------------------------------------------------


def memory(args: argparse.Namespace, encoder: EncoderSettings) -> list[dict[str, Any]]:
    rows = []
    for mode in ("streamed", "array"):
        for seconds in args.durations:
            command = [sys.executable, __file__, "--child", mode, "--seconds", str(seconds)]
            command += ["--width", str(args.width), "--height", str(args.height)]
            command += ["--preset", encoder.preset, "--crf", str(encoder.crf)]
            result = subprocess.run(command, capture_output=True, text=True, check=True)
            rows.append({"mode": mode, "seconds": seconds, **json.loads(result.stdout)})
    return rows


def child(args: argparse.Namespace) -> int:
    """One encode in this process; prints its peak RSS growth over the set-up's."""
    encoder = EncoderSettings(preset=args.preset, crf=args.crf)
    clip = Clip(args.width, args.height)
    count = args.seconds * FPS
    baseline = _peak_mb()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "out.mp4"
        if args.child == "streamed":
            with Mp4Writer(
                path, width=clip.width, height=clip.height, fps=FPS, audio_rate=None,
                encoder=encoder,
            ) as writer:  # fmt: skip
                for start in range(0, count, ENCODE_CHUNK):
                    writer.write_frames(clip.chunk(start, min(ENCODE_CHUNK, count - start)))
        else:
            encode_mp4(path, clip.chunk(0, count), FPS, None, 0, encoder=encoder)
    peak = _peak_mb()
    print(json.dumps({"baseline_mb": round(baseline), "peak_mb": round(peak),
                      "growth_mb": round(peak - baseline)}))  # fmt: skip
    return 0


def _peak_mb() -> float:
    """This process's peak RSS. Linux keeps ru_maxrss across exec, so a child started by a big
    parent would report the parent's peak: read VmHWM (reset at exec) where there is one."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# (d) libx264's settings -----------------------------------------------------------------------

SWEEP = [
    *(
        (preset, 0, None, 0)
        for preset in ("ultrafast", "superfast", "veryfast", "faster", "medium")
    ),
    ("superfast", 0, None, -2),
    ("superfast", 0, None, +2),
    ("veryfast", 1, None, 0),
    ("veryfast", 0, "film", 0),
    ("veryfast", 0, "fastdecode", 0),
]
"""(preset, threads, tune, CRF offset): superfast also 2 above and below, to compare at equal
quality (it has no macroblock tree, so its CRF means another quality)."""


def sweep(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    count = 12 if args.smoke else 48
    for motion in ("pan", "still"):
        clip = Clip(args.width, args.height, motion)
        yuv = [_yuv(clip.frame(t), t) for t in range(count)]
        for preset, threads, tune, offset in SWEEP:
            crf = args.crf + offset
            encoder = EncoderSettings(preset=preset, threads=threads, tune=tune, crf=crf)
            walls, data = [], b""
            for _ in range(args.repeats):
                wall, data = _encode_yuv(yuv, encoder)
                walls.append(wall)
            rows.append(
                {
                    "clip": motion,
                    "preset": preset,
                    "crf": crf,
                    "threads": threads,
                    "tune": tune or "-",
                    "fps": round(count / min(walls), 1),
                    "mbit_s": round(len(data) * 8 / (count / FPS) / 1e6, 1),
                    "luma_psnr_db": round(_luma_psnr(data, yuv), 2),
                }
            )
    return rows


def _yuv(rgb: Frames, index: int) -> av.VideoFrame:
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(
        format="yuv420p", dst_colorspace=Colorspace.ITU709, dst_color_range=ColorRange.MPEG
    )
    frame.pts = index
    return frame


def _encode_yuv(frames: list[av.VideoFrame], encoder: EncoderSettings) -> tuple[float, bytes]:
    """Encoder time alone (the frames are converted already), with Mp4Writer's stream set-up."""
    from kinema.media.streams import _x264_stream

    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = _x264_stream(container, FPS, encoder)
        stream.width, stream.height, stream.pix_fmt = frames[0].width, frames[0].height, "yuv420p"
        started = time.perf_counter()
        for frame in frames:
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
        wall = time.perf_counter() - started
    return wall, buffer.getvalue()


def _luma_psnr(data: bytes, reference: list[av.VideoFrame]) -> float:
    with av.open(io.BytesIO(data), mode="r") as container:
        decoded = [f.to_ndarray()[: f.height] for f in container.decode(video=0)]
    errors = [
        np.mean((d.astype(np.float32) - r.to_ndarray()[: r.height].astype(np.float32)) ** 2)
        for d, r in zip(decoded, reference, strict=True)
    ]
    return float(10 * np.log10(255**2 / np.mean(errors)))


# Report -----------------------------------------------------------------------------------------


def print_table(title: str, rows: list[dict[str, Any]], columns: tuple[str, ...]) -> None:
    print(f"\n{title}\n")
    print("| " + " | ".join(columns) + " |")
    print("| " + " | ".join("---" for _ in columns) + " |")
    for row in rows:
        print("| " + " | ".join(str(row.get(c, "")) for c in columns) + " |")


def _machine() -> dict[str, Any]:
    ffmpeg = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True).stdout
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "pyav": av.__version__,
        "pyav_ffmpeg": ".".join(map(str, av.ffmpeg_version_info))
        if isinstance(av.ffmpeg_version_info, tuple)
        else str(av.ffmpeg_version_info),
        "ffmpeg_cli": ffmpeg.splitlines()[0] if ffmpeg else None,
        "date": time.strftime("%Y-%m-%d"),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--durations", type=int, nargs="+", default=[5, 15], help="clip seconds")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--preset", default=EncoderSettings().preset)
    p.add_argument("--crf", type=int, default=EncoderSettings().crf)
    p.add_argument("--width", type=int, default=1920)
    p.add_argument("--height", type=int, default=1080)
    p.add_argument(
        "--parts",
        nargs="+",
        choices=("encode", "conform", "memory", "sweep"),
        default=["encode", "conform", "memory"],
        help="what to measure (sweep: libx264's settings, not run by default)",
    )
    p.add_argument("--smoke", action="store_true", help="320x180, 1 s, one repeat")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "media.json")
    p.add_argument("--child", choices=("streamed", "array"), help=argparse.SUPPRESS)
    p.add_argument("--seconds", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.smoke:
        args.width, args.height, args.durations, args.repeats = 320, 180, [1, 2], 1
    return args


COLUMNS = {
    "memory": ("mode", "seconds", "baseline_mb", "peak_mb", "growth_mb"),
    "encode": ("source", "seconds", "frames", "writer_s", "ffmpeg_s", "ratio", "writer_fps",
               "ratio_range", "writer_mbit_s", "ffmpeg_mbit_s"),
    "conform": ("source", "target", "step", "ms_writer_scales", "ms_conform_scales", "ratio"),
    "sweep": ("clip", "preset", "crf", "threads", "tune", "fps", "mbit_s", "luma_psnr_db"),
}  # fmt: skip
TITLES = {
    "memory": "(c) peak RSS growth, one process each",
    "encode": "(a) encode, Mp4Writer vs the ffmpeg command line (64x32: both scale it up)",
    "conform": "(b) engine frame -> encoder's yuv420p 1920x1080 (or --width x --height), per frame",
    "sweep": "(d) libx264 settings, 48 frames",
}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child(args)
    if shutil.which("ffmpeg") is None:
        print("bench/media.py needs the ffmpeg command (apt-get install ffmpeg)", file=sys.stderr)
        return 2
    encoder = EncoderSettings(preset=args.preset, crf=args.crf)
    report: dict[str, Any] = {
        "settings": {"encoder": encoder.model_dump(), "chunk": ENCODE_CHUNK,
                     "size": f"{args.width}x{args.height}", "fps": FPS,
                     "repeats": args.repeats, "smoke": args.smoke},
        "machine": _machine(),
    }  # fmt: skip
    # Memory first, while this process is small (its children start as copies of it).
    for part in sorted(args.parts, key=list(COLUMNS).index):
        if part == "memory":
            report[part] = memory(args, encoder)
        elif part == "encode":
            with tempfile.TemporaryDirectory() as tmp:
                report[part] = compare(args, encoder, Path(tmp))
        elif part == "conform":
            report[part] = conform_costs(args)
        else:
            report[part] = sweep(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{args.width}x{args.height} at {FPS} fps, libx264 {encoder.preset} CRF {encoder.crf}")
    for part in args.parts:
        print_table(TITLES[part], report[part], COLUMNS[part])
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
